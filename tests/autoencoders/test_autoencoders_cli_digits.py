"""`latentgeo train ae` on the embedded digits set works with its defaults (the test split has only 359 images)."""
import json

from latentgeo.cli import main


def test_train_ae_digits_default_validation_size(tmp_path, capsys):
    out = tmp_path / "ae"
    try:
        main(["train", "ae", "--method", "gpe", "--data", "digits", "--out", str(out), "--steps", "3",
              "--decoder-steps", "3", "--quiet"])
    except SystemExit as e:  # main() exits only on errors
        assert e.code in (0, None), capsys.readouterr().err
    info = json.loads((out / "autoencoder.json").read_text())
    assert info  # the run finished and wrote its description
    assert (out / "encoder.safetensors").exists() and (out / "decoder.safetensors").exists()


def test_train_ae_unknown_decoder_fails_before_training(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as e:
        main(["train", "ae", "--method", "gpe", "--data", "digits", "--out", str(tmp_path / "x"), "--steps", "3",
              "--decoder", "bogus", "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown --decoder 'bogus'; choose one of: wide, lean, mlp"]
    assert not (tmp_path / "x" / "encoder.safetensors").exists()
