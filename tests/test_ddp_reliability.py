"""DDP reliability without a second process (review 2026-12, issue 22: N9): a collective
timeout is set, and a failed or timed-out collective is one clear error."""

import datetime

import pytest
import torch

import esdlib.train.engine as engine
from esdlib.train.config import ConfigError


def test_init_distributed_sets_a_collective_timeout(monkeypatch):
    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(engine.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(engine.dist, "init_process_group",
                        lambda backend, **kw: seen.update(backend=backend, **kw))
    assert engine.init_distributed(torch.device("cpu"))
    assert seen == {"backend": "gloo",
                    "timeout": datetime.timedelta(seconds=engine.DDP_TIMEOUT_S)}
    assert engine.DDP_TIMEOUT_S < 1800  # shorter than torch's 30-minute default
    monkeypatch.setenv("ESD_DDP_TIMEOUT_S", "42")
    engine.init_distributed(torch.device("cpu"))
    assert seen["timeout"] == datetime.timedelta(seconds=42)


@pytest.mark.parametrize("text", ["0", "-1", "soon", "nan"])
def test_bad_ddp_timeout_is_a_config_error(text, monkeypatch):
    monkeypatch.setenv("ESD_DDP_TIMEOUT_S", text)
    with pytest.raises(ConfigError, match="ESD_DDP_TIMEOUT_S"):
        engine.ddp_timeout_s()


def test_a_timed_out_collective_is_one_clear_error(monkeypatch, capsys):
    from esdlib import cli

    def stuck(tensor):
        raise RuntimeError("[gloo/transport/tcp/pair.cc:446] Timed out waiting 600000ms\nmore")

    monkeypatch.setattr(engine.dist, "all_reduce", stuck)
    monkeypatch.setattr(engine.dist, "get_rank", lambda: 0)
    with pytest.raises(engine.DistributedError, match="rank 0: averaging the gradients failed"):
        engine._all_reduce(torch.zeros(3), "averaging the gradients")

    def fit(*args, **kwargs):
        engine._all_reduce(torch.zeros(3), "averaging the gradients")

    monkeypatch.setattr(engine, "fit", fit)
    assert cli.main(["train", "--profile", "smoke", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "distributed run" in err and "Timed out" in err
