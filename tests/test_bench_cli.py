"""`laco bench` on the command line: listing, and bad input as one line with exit code 2."""

from __future__ import annotations

from laco.cli import main


def test_list_shows_the_shipped_profiles(capsys):
    assert main(["bench", "--list"]) == 0
    assert {"smoke", "smollm2-135m", "llama2-70b"} <= set(capsys.readouterr().out.split())


def test_unregistered_method_fails_before_any_work(tmp_path, capsys):
    profile = tmp_path / "p.toml"
    profile.write_text('[model]\nspec = "smollm2-135m"\n[[methods]]\nname = "llm-prunr"\n')
    assert main(["bench", "--profile", str(profile), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "'llm-prunr' is not registered (did you mean 'llm-pruner'?)" in err and not (tmp_path / "run").exists()


def test_missing_data_dir_is_an_input_error(tmp_path, capsys):
    assert main(["bench", "--profile", "smoke", "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "data dir not found" in capsys.readouterr().err
