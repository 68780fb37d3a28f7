"""Config values that would fail deep inside a run are refused where they are read, in one line naming the key."""

import pytest

from lafa.cli import main as lafa_main
from lafa.data import AudioDataModule, LatentDataModule
from lafa.data.stream import ShardStream


@pytest.mark.parametrize("size", [0, -1])
def test_a_batch_size_below_one_is_one_line_naming_the_key(size):
    with pytest.raises(ValueError) as err:
        ShardStream(["a.tar"], lambda s, r, e: s, list, size, train=True)
    assert str(err.value) == (f"data.batch_size (or val_batch_size): {size} is not allowed: batches hold at least 1 "
                              "sample; set it to an integer >= 1")
    for dm in (AudioDataModule(train_shards="pipe:cat a.tar", batch_size=size, num_workers=0),
               LatentDataModule(train_shards="pipe:cat a.tar", batch_size=size, num_workers=0)):
        with pytest.raises(ValueError, match="data.batch_size"):  # before any ZeroDivisionError in the epoch plan
            dm.train_dataloader()


def test_encode_refuses_a_zero_batch_size_before_loading(tmp_path, capsys):
    ckpt = tmp_path / "x.ckpt"
    ckpt.write_bytes(b"not read")
    assert lafa_main(["encode", "--ckpt_path", str(ckpt), "--shards", str(tmp_path / "*.tar"), "--out",
                      str(tmp_path / "o"), "--batch_size", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "lafa encode: error: --batch_size 0: must be an integer >= 1; give --batch_size 1"
    assert not (tmp_path / "o").exists()
