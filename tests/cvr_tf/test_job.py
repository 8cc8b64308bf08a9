"""Every job reports a usage error in one line, not after the help of all its flags."""

import subprocess
import sys
import textwrap

JOB = textwrap.dedent('''
    """A job whose docstring absl would print before the error."""
    from absl import app, flags

    from cvr_tf import job

    flags.DEFINE_integer("steps", 1, "Steps; absl would print this help too.")

    def main(argv):
        if flags.FLAGS.steps < 1:
            raise app.UsageError(f"--steps must be positive, got {flags.FLAGS.steps}")
        print("ran", flags.FLAGS.steps)

    job.run(main)
''')


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", JOB, *args], capture_output=True, text=True,
                          timeout=120)


def test_a_usage_error_is_one_line_on_stderr_with_the_exit_status_one():
    result = _run("--steps=0")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == "error: --steps must be positive, got 0\n"


def test_a_good_run_and_the_help_are_unchanged():
    assert _run("--steps=3").stdout == "ran 3\n"
    assert "Steps; absl would print this help too." in _run("--helpshort").stdout
