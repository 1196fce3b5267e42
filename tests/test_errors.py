"""The one exception root and the one retry policy."""

from __future__ import annotations

import pickle

import pytest

import arcoforge as af
from arcoforge import errors
from arcoforge.cli import main


def test_every_public_error_derives_from_the_root() -> None:
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, errors.ArcoforgeError), name
    assert issubclass(af.SchemaError, errors.ArcoforgeError)
    assert issubclass(af.SourceError, errors.ArcoforgeError)
    assert issubclass(af.SourceReadError, errors.ArcoforgeError)


@pytest.mark.parametrize(("err", "transient"), [
    (errors.SourceError("https://x/a.nc", "HTTP 404", reason="not_found"), False),
    (errors.SourceError("https://x/a.nc", "HTTP 401", reason="auth"), False),
    (errors.SourceError("https://x/a.nc", "failed after 4 attempts", reason="transient"), True),
    (errors.SchemaError("drift"), False),
    (errors.SourceReadError("bad file"), False),
    (errors.TruncatedFileError("short file"), False),
    (ConnectionResetError("reset"), True),
    (TimeoutError("slow"), True),
    (OSError("an object store hiccup"), True),
    (FileNotFoundError("gone"), False),
    (PermissionError("no"), False),
    (ValueError("a bug"), False),
    (KeyError("a bug"), False),
])
def test_retry_policy_never_retries_a_permanent_failure(err: BaseException,
                                                        transient: bool) -> None:
    from arcoforge.forge.engines.common import retryable

    assert errors.is_transient(err) is transient
    assert retryable(err) is transient


def test_source_error_survives_pickling_with_its_reason() -> None:
    """Engines send errors between processes: the reason and the flag must survive."""
    err = errors.SourceError("https://x/a.nc", "HTTP 404 Not Found", "Check the URL",
                             reason="not_found")
    back = pickle.loads(pickle.dumps(err))
    assert (type(back), str(back), back.reason, back.transient) == (
        errors.SourceError, str(err), "not_found", False)


def test_cli_prints_arcoforge_errors_as_one_line(tmp_path, capsys) -> None:
    recipe = tmp_path / "recipe.py"
    recipe.write_text("x = 1\n")
    assert main(["bake", str(recipe), "--target", str(tmp_path / "t.zarr")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "defines no" in err[0]
    assert "Traceback" not in "\n".join(err)


def test_cli_lets_a_real_bug_show_its_traceback(tmp_path) -> None:
    recipe = tmp_path / "recipe.py"
    recipe.write_text("raise ZeroDivisionError('a bug in the recipe module')\n")
    with pytest.raises(ZeroDivisionError):
        main(["bake", str(recipe), "--target", str(tmp_path / "t.zarr")])


def test_credentials_in_a_target_url_are_refused_without_echoing_them(tmp_path) -> None:
    from arcoforge.errors import ConfigError
    from arcoforge.forge.targets.base import resolve_target

    with pytest.raises(ConfigError) as info:
        resolve_target("s3://AKIAEXAMPLEKEY:s3cr3t/value@bucket/out.zarr")
    text = str(info.value)
    assert "AKIAEXAMPLEKEY" not in text and "s3cr3t" not in text
    assert "s3://bucket/out.zarr" in text and "environment" in text
