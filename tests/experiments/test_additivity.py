"""Additivity analysis on synthetic grids with known main effects and a planted interaction."""

import itertools
import math

import pytest

from experiments import additivity

BACKBONE = {"dcnv2 x1": 0.0, "dcnv2 x4": 0.02, "dhen x1": 0.03}
EMBEDDING = {"x1": 0.0, "x2": 0.01}
DATA = {"3d": 0.0, "12d": 0.06}
BASELINE = {"backbone": "dcnv2 x1", "embedding": "x1", "data": "3d"}
# Resources: the backbone gains above are exactly 0.01 per doubling of FLOPs (x4: +0.02, x8: +0.03).
FLOPS = {"dcnv2 x1": 1e6, "dcnv2 x4": 4e6, "dhen x1": 8e6}
EMBEDDING_PARAMS = {"x1": 1e6, "x2": 2e6}
TRAIN_EXAMPLES = {"3d": 1e5, "12d": 4e5}


def _rows(interaction: float = 0.0) -> list[dict]:
    """Baseline (3 seeds), one-factor axes and the 2x2x2 corner (dhen x1, x2, 12d)."""
    cells = [dict(BASELINE)]
    cells += [{**BASELINE, "backbone": b} for b in ("dcnv2 x4", "dhen x1")]
    cells += [{**BASELINE, "embedding": "x2"}, {**BASELINE, "data": "12d"}]
    for b, e, d in itertools.product(["dcnv2 x1", "dhen x1"], ["x1", "x2"], ["3d", "12d"]):
        cells.append({"backbone": b, "embedding": e, "data": d})
    rows, seen = [], set()
    for levels in cells:
        key = tuple(levels.values())
        if key in seen:
            continue
        seen.add(key)
        gain = BACKBONE[levels["backbone"]] + EMBEDDING[levels["embedding"]] + DATA[levels["data"]]
        if levels == {"backbone": "dhen x1", "embedding": "x2", "data": "12d"}:
            gain += interaction
        scaled = [f for f in BASELINE if levels[f] != BASELINE[f]]
        rows.append(_row(levels, gain, "+".join(scaled) or "baseline"))
    # Two more seeds of the baseline, symmetric around it: noise sigma 0.002, mean unchanged.
    rows += [_row(BASELINE, g, "baseline-seed") for g in (0.002, -0.002)]
    return rows


def _row(levels: dict, gain: float, role: str) -> dict:
    return {"cell": "/".join(levels.values()), "levels": dict(levels), "role": role,
            "backbone": levels["backbone"].split()[0], "map_gain": gain,
            "mean_average_precision": 0.3 * (1 + gain),
            "dense_flops_per_example": FLOPS[levels["backbone"]],
            "embedding_params": EMBEDDING_PARAMS[levels["embedding"]],
            "train_examples": TRAIN_EXAMPLES[levels["data"]]}


def test_purely_additive_grid_fits_exactly_and_is_supported():
    analysis = additivity.analyze(_rows())
    assert analysis["r_squared"] == pytest.approx(1.0, abs=1e-12)
    assert analysis["cells"] == 9 and analysis["rows"] == 11
    assert analysis["degrees_of_freedom"] == 9 - 5  # mu + 2 backbone + 1 embedding + 1 data
    assert analysis["intercept"] == pytest.approx(0.0, abs=1e-12)
    for factor, truth in (("backbone", BACKBONE), ("embedding", EMBEDDING), ("data", DATA)):
        assert analysis["effects"][factor] == pytest.approx(truth, abs=1e-12)
    assert analysis["noise_sigma"] == pytest.approx(0.002)  # sqrt(8e-6 / 2 dof)
    # Power: 2 sigma sqrt(1 / n_joint + sum 1 / n_single + (k - 1)^2 / n_base), the baseline
    # run 3 times and every other cell once.
    bands = {len(j["scaled"]): j["noise_band"] for j in analysis["joint"]}
    assert bands[2] == pytest.approx(2 * 0.002 * math.sqrt(1 + 2 + 1 / 3))
    assert bands[3] == pytest.approx(2 * 0.002 * math.sqrt(1 + 3 + 4 / 3))
    assert analysis["smallest_detectable_interaction"] == pytest.approx(bands[2])
    assert analysis["largest_predicted_joint_change"] == pytest.approx(0.03 + 0.01 + 0.06)
    assert "the design detects interactions beyond ±0.73%" in analysis["verdict"]
    table = additivity.power_table([analysis])
    assert table.splitlines()[-1] == "| map_gain | 0.20% | ±0.73% | 10.00% | Supported |"
    joint = analysis["joint"]
    assert len(joint) == 4  # three pairs and the triple of the corner
    assert all(j["deviation"] == pytest.approx(0.0, abs=1e-12) for j in joint)
    assert analysis["verdict"].startswith("Supported: all 4 joint scale-ups")


def test_per_factor_scaling_fits():
    fits = {f["series"]: f for f in additivity.analyze(_rows())["factor_fits"]}
    # dhen has a single axis cell and no baseline of its family: no fit.
    assert set(fits) == {"backbone:all", "backbone:dcnv2", "embedding", "data"}
    everything = fits["backbone:all"]
    assert everything["points"] == 3 and everything["range"] == [1e6, 8e6]
    assert everything["per_doubling"] == pytest.approx(0.01)
    assert everything["log_linear_r_squared"] == pytest.approx(1.0)
    assert fits["data"]["per_doubling"] == pytest.approx(0.06 / 2)
    assert fits["data"]["map_exponent"] == pytest.approx(math.log(1.06) / math.log(4))
    assert fits["embedding"]["resource"] == "embedding_params"


def test_planted_interaction_is_found_where_it_was_planted():
    analysis = additivity.analyze(_rows(interaction=0.05))
    assert analysis["r_squared"] < 0.95
    worst = analysis["largest_residuals"][0]
    assert worst["levels"] == {"backbone": "dhen x1", "embedding": "x2", "data": "12d"}
    triple = next(j for j in analysis["joint"] if len(j["scaled"]) == 3)
    assert triple["deviation"] == pytest.approx(0.05)
    assert triple["predicted"] == pytest.approx(0.03 + 0.01 + 0.06)
    assert triple["beyond_noise"]
    assert [j["beyond_noise"] for j in analysis["joint"]].count(True) == 1
    assert analysis["verdict"].startswith("Not supported: 1 of 4")
    assert "super-additive" in analysis["verdict"]
    report = additivity.markdown_report(analysis)
    assert "| dhen x1, x2, 12d | +15.00% | +10.00% | +5.00% **" in report


def test_unidentifiable_design_is_refused():
    # dhen x1 appears only with 12d, which appears nowhere else: their effects cannot separate.
    rows = [_row(BASELINE, 0.0, "baseline"),
            _row({**BASELINE, "backbone": "dhen x1", "data": "12d"}, 0.1, "backbone+data")]
    with pytest.raises(ValueError, match="not identifiable .* add a one-factor axis cell"):
        additivity.analyze(rows)


def test_rows_without_gain_name_the_cell():
    rows = _rows()
    rows[3]["map_gain"] = None
    with pytest.raises(ValueError, match="has no 'map_gain'"):
        additivity.analyze(rows)


def test_noise_wider_than_the_gains_makes_a_weak_verdict():
    rows = _rows(interaction=0.05)
    for row in rows:
        if row["role"] == "baseline-seed":
            row["map_gain"] = 0.2 if row["map_gain"] > 0 else -0.2  # sigma 0.2: a huge band
    analysis = additivity.analyze(rows)
    assert not any(j["beyond_noise"] for j in analysis["joint"])
    assert analysis["verdict"].startswith("Not rejected, but the test is weak")
    assert "(at most 10.00%)" in analysis["verdict"]  # the largest sum of singles
