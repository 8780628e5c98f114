"""PoolingConfig from sentence-transformers files, and pool() on hand-checkable tensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from maxcli.pipelines.lib.pooling import PoolingConfig, PoolingMode, pool

ST_MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
]
NORMALIZE = {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}


def write_st_folder(root: Path, flags: dict[str, bool], normalize: bool) -> Path:
    (root / "1_Pooling").mkdir(parents=True)
    (root / "modules.json").write_text(json.dumps(ST_MODULES + ([NORMALIZE] if normalize else [])))
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 4, **flags}))
    return root


@pytest.mark.parametrize(
    ("flags", "normalize", "expected"),
    [
        ({"pooling_mode_cls_token": True}, True, PoolingConfig((PoolingMode.CLS,), True)),
        ({"pooling_mode_max_tokens": True}, False, PoolingConfig((PoolingMode.MAX,), False)),
        ({"pooling_mode_lasttoken": True}, True, PoolingConfig((PoolingMode.LAST_TOKEN,), True)),
        # Several modes: concatenated in sentence-transformers' order whatever the key order.
        ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}, False,
         PoolingConfig((PoolingMode.CLS, PoolingMode.MEAN), False)),
    ],
)
def test_from_sentence_transformers_files(
    tmp_path: Path, flags: dict, normalize: bool, expected: PoolingConfig
) -> None:
    assert PoolingConfig.from_model_dir(write_st_folder(tmp_path, flags, normalize)) == expected


def test_defaults_without_files(tmp_path: Path) -> None:
    assert PoolingConfig.from_model_dir(tmp_path) == PoolingConfig((PoolingMode.MEAN,), True)
    assert PoolingConfig.from_model_dir(tmp_path, is_decoder=True) == PoolingConfig((PoolingMode.LAST_TOKEN,), True)


def test_bad_files_raise_value_error(tmp_path: Path) -> None:
    folder = write_st_folder(tmp_path / "a", {"pooling_mode_weightedmean_tokens": True}, True)
    with pytest.raises(ValueError, match="weightedmean_tokens is not supported"):
        PoolingConfig.from_model_dir(folder)
    folder = write_st_folder(tmp_path / "b", {"pooling_mode_mean_tokens": False}, True)
    with pytest.raises(ValueError, match="no pooling mode is enabled"):
        PoolingConfig.from_model_dir(folder)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "modules.json").write_text("[{")
    with pytest.raises(ValueError, match="invalid JSON"):
        PoolingConfig.from_model_dir(tmp_path / "c")


def test_pool_ignores_padding() -> None:
    hidden = torch.tensor(
        [[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]],  # row 0: two real tokens, one pad
         [[2.0, -2.0], [0.0, 6.0], [-1.0, 1.0]]]  # row 1: three real tokens
    )
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])

    def run(*modes: PoolingMode) -> torch.Tensor:
        return pool(hidden, mask, PoolingConfig(modes, normalize=False))

    torch.testing.assert_close(run(PoolingMode.CLS), torch.tensor([[1.0, 0.0], [2.0, -2.0]]))
    torch.testing.assert_close(run(PoolingMode.MEAN), torch.tensor([[2.0, 2.0], [1 / 3, 5 / 3]]))
    torch.testing.assert_close(run(PoolingMode.MAX), torch.tensor([[3.0, 4.0], [2.0, 6.0]]))
    torch.testing.assert_close(run(PoolingMode.LAST_TOKEN), torch.tensor([[3.0, 4.0], [-1.0, 1.0]]))
    torch.testing.assert_close(
        run(PoolingMode.MEAN_SQRT_LEN), torch.tensor([[4.0, 4.0], [1.0, 5.0]]) / torch.tensor([[2**0.5], [3**0.5]])
    )
    both = run(PoolingMode.CLS, PoolingMode.LAST_TOKEN)
    torch.testing.assert_close(both, torch.tensor([[1.0, 0.0, 3.0, 4.0], [2.0, -2.0, -1.0, 1.0]]))
    normalized = pool(hidden, mask, PoolingConfig((PoolingMode.LAST_TOKEN,), normalize=True))
    torch.testing.assert_close(normalized[0], torch.tensor([0.6, 0.8]))
