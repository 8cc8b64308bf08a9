"""TensorProto <-> numpy conversion and input validation against a SignatureDef."""

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from cvr_tf.compat import tf
from serving.errors import ServingError
from serving.tensors import input_specs, to_ndarray, to_tensor_proto, validate_inputs


@pytest.mark.parametrize(
    "array",
    [
        np.array([0.5, -1.25, 3.0], np.float32),
        np.arange(6, dtype=np.int64).reshape(2, 3),
        np.array([1, 2], np.int32),
        np.array([True, False]),
        np.array([1.5], np.float64),
        np.array([b"a", b"", "caf\u00e9".encode()], dtype=object),
    ],
)
def test_round_trip_matches_tensorflow(array):
    proto = to_tensor_proto(array)
    assert proto.tensor_shape == tf.make_tensor_proto(array).tensor_shape
    assert proto.dtype == tf.make_tensor_proto(array).dtype
    back = to_ndarray(proto, "x")
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)
    np.testing.assert_array_equal(tf.make_ndarray(proto), array)


def test_reads_tensorflow_typed_value_fields():
    proto = tf.make_tensor_proto(np.array([1.0, 2.0], np.float32))
    proto.ClearField("tensor_content")
    proto.float_val.extend([1.0, 2.0])
    np.testing.assert_array_equal(to_ndarray(proto, "x"), [1.0, 2.0])
    proto.ClearField("float_val")
    proto.float_val.append(3.0)  # TensorFlow repeats the last value to fill the shape
    np.testing.assert_array_equal(to_ndarray(proto, "x"), [3.0, 3.0])
    half = to_tensor_proto(np.array([0.5, 2.0], np.float16))
    np.testing.assert_array_equal(to_ndarray(half, "x"), np.array([0.5, 2.0], np.float16))
    unicode = to_tensor_proto(np.array(["abc", "d"]))
    assert list(unicode.string_val) == [b"abc", b"d"]


def test_malformed_proto_is_invalid_argument():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\x00" * 12)
    proto.tensor_shape.dim.add(size=4)
    with pytest.raises(ServingError, match="tensor parsing error: price") as raised:
        to_ndarray(proto, "price")
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT


def _signature() -> meta_graph_pb2.SignatureDef:
    signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    for name, dtype, dims in [
        ("query", types_pb2.DT_STRING, [-1]),
        ("price", types_pb2.DT_FLOAT, [-1]),
        ("embeddings", types_pb2.DT_FLOAT, [-1, 3]),
    ]:
        info = signature.inputs[name]
        info.dtype = dtype
        for size in dims:
            info.tensor_shape.dim.add(size=size)
    return signature


def _inputs(**overrides):
    inputs = {
        "query": np.array([b"a", b"b"], dtype=object),
        "price": np.array([1.0, 2.0], np.float32),
        "embeddings": np.zeros((2, 3), np.float32),
    }
    inputs.update(overrides)
    return {name: value for name, value in inputs.items() if value is not None}


def test_valid_inputs_return_the_batch_size():
    specs = input_specs(_signature())
    assert specs["embeddings"].shape_text() == "[-1, 3]"
    assert validate_inputs("sig", specs, _inputs()) == 2


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            _inputs(typo=np.zeros(2, np.float32)),
            r"input tensor alias not found in signature: typo\. Inputs expected to be in the set "
            r"\{embeddings,price,query\}",
        ),
        (_inputs(price=None), r"Missing but required: \{price\}"),
        (
            _inputs(price=np.array([b"x", b"y"], dtype=object)),
            "input 'price' has dtype string but signature 'sig' expects float32",
        ),
        (
            _inputs(price=np.array([1.0, 2.0])),
            "input 'price' has dtype float64 but signature 'sig' expects float32",
        ),
        (
            _inputs(price=np.ones((2, 1), np.float32)),
            r"input 'price' has shape \[2, 1\] \(rank 2\) but signature 'sig' expects shape "
            r"\[-1\] \(rank 1\)",
        ),
        (
            _inputs(embeddings=np.zeros((2, 4), np.float32)),
            "expects \\[-1, 3\\]: dimension 1 must be 3",
        ),
        (
            _inputs(price=np.ones(3, np.float32)),
            r"disagree on the batch size \(dimension 0\): embeddings=2, price=3, query=2",
        ),
        (
            {
                "query": np.array([], dtype=object),
                "price": np.zeros(0, np.float32),
                "embeddings": np.zeros((0, 3), np.float32),
            },
            "has an empty batch",
        ),
    ],
)
def test_invalid_inputs_are_invalid_argument(inputs, message):
    with pytest.raises(ServingError, match=message) as raised:
        validate_inputs("sig", input_specs(_signature()), inputs)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
