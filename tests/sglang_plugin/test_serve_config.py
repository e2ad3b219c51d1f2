"""The one frozen serve configuration (docs/serve_config.md): resolved once from SGLang's flags,
the drafter and the developer switches; carried to other processes inside pickled ServerArgs
and through /server_info's msgpack; simulated acceptance (benchmarks only) on the chain path,
both verifies; the adaptive policy parsed (not applied)."""

import json
import os
import pickle
import subprocess
import sys
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from _pair import write_pair
from _logs import logged

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def sg():
    from domino_sglang.sglang_plugin import register

    assert register()


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("DOMINO_TREE_TOPK", "DOMINO_TREE_BUDGET", "DOMINO_ADAPTIVE", "SGLANG_SIMULATE_ACC_LEN",
                 "SGLANG_SIMULATE_ACC_METHOD", "SGLANG_SIMULATE_ACC_TOKEN_MODE",
                 "DOMINO_SAMPLED_DRAFTS", "DOMINO_SAMPLED_VERIFY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _resolve(target, draft, *extra):
    from sglang.srt.server_args import prepare_server_args

    return prepare_server_args(["--model-path", target, "--speculative-algorithm", "domino",
                                "--device", "cuda", "--skip-tokenizer-init",
                                "--speculative-draft-model-path", draft, *extra])


# ---- the dataclass itself ---------------------------------------------------------------------
def test_config_is_frozen_and_checks_its_invariants():
    from domino_sglang.sglang_plugin.serve_config import DominoServeConfig

    cfg = DominoServeConfig(block_size=8, num_verify_tokens=8, drafter_block_size=16)
    with pytest.raises(FrozenInstanceError):
        cfg.block_size = 4
    with pytest.raises(TypeError):
        DominoServeConfig(block_size=8, num_verify_tokens=8, drafter_block_size=16, tree_k=2)
    with pytest.raises(ValueError, match="chain mode has no tree_budget"):
        DominoServeConfig(block_size=8, num_verify_tokens=8, drafter_block_size=8,
                          tree_budget=16)
    with pytest.raises(ValueError, match="tree mode has N = 15"):
        DominoServeConfig(block_size=8, num_verify_tokens=16, drafter_block_size=8,
                          tree_topk=2, tree_budget=64)
    with pytest.raises(ValueError, match="block_size=12"):
        DominoServeConfig(block_size=12, num_verify_tokens=12, drafter_block_size=8)


def test_developer_switches():
    from domino_sglang.config import ConfigError
    from domino_sglang.sglang_plugin.options import read_developer_switches

    d = read_developer_switches({})
    assert (d.sampled_verify, d.simulate_acc_len, d.eager_draft_sampler) == ("domino", -1.0, False)
    d = read_developer_switches({"SGLANG_SIMULATE_ACC_LEN": "4.5", "DOMINO_SAMPLED_VERIFY": "sglang",
                                 "SGLANG_SIMULATE_ACC_TOKEN_MODE": "real-draft-token",
                                 "SGLANG_DFLASH_EAGER_DRAFT_SAMPLER": "true",
                                 "DOMINO_TREE_TOPK": "3"})
    assert (d.simulate_acc_len, d.sampled_verify, d.simulate_acc_token_mode,
            d.eager_draft_sampler, d.legacy_tree_topk) == (4.5, "sglang", "real-draft-token",
                                                           True, 3)
    assert read_developer_switches({}).adaptive is True
    assert read_developer_switches({"DOMINO_ADAPTIVE": "0"}).adaptive is False
    assert read_developer_switches({"DOMINO_ADAPTIVE": "true"}).adaptive is True
    for var, bad in (("DOMINO_ADAPTIVE", "sometimes"),
                     ("SGLANG_SIMULATE_ACC_LEN", "x"), ("SGLANG_SIMULATE_ACC_METHOD", "mean"),
                     ("SGLANG_SIMULATE_ACC_TOKEN_MODE", "Fixed"), ("DOMINO_SAMPLED_VERIFY", "x"),
                     ("SGLANG_DFLASH_EAGER_DRAFT_SAMPLER", "maybe"), ("DOMINO_TREE_BUDGET", "1.5")):
        with pytest.raises(ConfigError, match=f"{var}='{bad}'"):
            read_developer_switches({var: bad})


# ---- carried to the scheduler -----------------------------------------------------------------
_LOAD = """
import pickle, sys; sys.path.insert(0, {here!r}); import _tv_mock; _tv_mock.install()
from domino_sglang.sglang_plugin.serve_config import serve_config_of
sa = pickle.load(open({path!r}, "rb"))
print("CFG", repr(serve_config_of(sa)))
"""


@pytest.mark.sglang
def test_config_survives_pickle_in_another_process_and_msgpack(sg, tiny_pair, tmp_path,
                                                                clean_env):
    """ServerArgs reach the scheduler pickled (spawn): the extra attribute must survive there;
    /server_info sends vars(server_args) through msgpack (Scheduler.get_internal_state)."""
    import msgspec
    from sglang.srt.utils.msgspec_utils import msgspec_to_builtins

    from domino_sglang.sglang_plugin.serve_config import CONFIG_ATTR, serve_config_of

    target, draft = tiny_pair
    sa = _resolve(target, draft, "--attention-backend", "triton", "--grammar-backend", "none",
                  "--speculative-eagle-topk", "2", "--speculative-num-draft-tokens", "12")
    cfg = serve_config_of(sa)
    path = tmp_path / "sa.pkl"
    path.write_bytes(pickle.dumps(sa))
    out = subprocess.run([sys.executable, "-c", _LOAD.format(here=str(HERE), path=str(path))],
                         capture_output=True, text=True, timeout=180)
    line = [x for x in out.stdout.splitlines() if x.startswith("CFG ")]
    assert line == [f"CFG {cfg!r}"], out.stderr[-3000:]
    state = dict(vars(sa))
    state.pop("model_config", None)
    state.pop("custom_sigquit_handler", None)
    back = msgspec.msgpack.decode(msgspec.msgpack.encode(msgspec_to_builtins(state)))
    assert back[CONFIG_ATTR]["tree_topk"] == 2 and back[CONFIG_ATTR]["num_verify_tokens"] == 12


# ---- simulated acceptance ---------------------------------------------------------------------
@pytest.mark.sglang
def test_simulated_acceptance_in_the_config_and_logged(sg, tiny_pair, clean_env):
    from domino_sglang.sglang_plugin.serve_config import serve_config_of

    target, draft = tiny_pair
    assert serve_config_of(_resolve(target, draft)).simulated_acceptance is None  # never default
    clean_env.setenv("SGLANG_SIMULATE_ACC_LEN", "3.5")
    with logged("domino_sglang.sglang_plugin.validate") as log:
        sa = _resolve(target, draft)
    sim = serve_config_of(sa).simulated_acceptance
    assert (sim.acc_len, sim.method, sim.token_mode) == (3.5, "match-expected", "fixed")
    assert any("SIMULATED ACCEPTANCE IS ON" in m and "NOT lossless" in m for m in log), log
    clean_env.setenv("SGLANG_SIMULATE_ACC_METHOD", "gaussian")
    with pytest.raises(ValueError, match="SGLANG_SIMULATE_ACC_METHOD='gaussian'"):
        _resolve(target, draft)


_SIMULATE = """
import os, sys; sys.path.insert(0, {here!r}); import _tv_mock; _tv_mock.install()
from sglang.srt.plugins import load_plugins
load_plugins()
import torch
from sglang.srt.server_args import prepare_server_args
from sglang.srt.speculative import dflash_worker_v2 as dw
from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
import domino_sglang.sglang_plugin as plugin
from domino_sglang.sglang_plugin.serve_config import serve_config_of
from domino_sglang.sglang_plugin.worker import DominoWorkerV2

sa = prepare_server_args(["--model-path", {target!r}, "--speculative-algorithm", "domino",
                          "--device", "cuda", "--skip-tokenizer-init",
                          "--speculative-draft-model-path", {draft!r}])
cfg = serve_config_of(sa)
assert cfg.simulated_acceptance.acc_len == 2.5 and not cfg.tree_mode
assert SpeculativeAlgorithm.from_string("domino").create_worker(sa) is DominoWorkerV2
# the factory installed our sampled verify in DFlash's worker module
assert dw.compute_dflash_sampling_correct_drafts_and_bonus.__wrapped__ is not None
mode = os.environ["SGLANG_SIMULATE_ACC_TOKEN_MODE"]
bs, B, V = 3, cfg.block_size, 50
gen = torch.Generator().manual_seed(0)
lengths = []
for it in range(300):
    cand = torch.randint(0, V, (bs, B), generator=gen)
    logits = torch.randn(bs * B, V, generator=gen)
    target_predict = None
    if it % 2:  # greedy path (DFlash's eager twin), as the worker's greedy branch
        target_predict = logits.argmax(-1).view(bs, B)
        acc, bonus = dw.compute_dflash_correct_drafts_and_bonus(candidates=cand,
                                                                 target_predict=target_predict)
    else:  # our sampled verify, through the name DFlash's worker calls
        import types
        info = types.SimpleNamespace(temperatures=torch.ones(bs, 1),
                                     top_ks=torch.full((bs,), 1 << 30), top_ps=torch.ones(bs),
                                     min_ps=None)
        acc, bonus = dw.compute_dflash_sampling_correct_drafts_and_bonus(
            candidates=cand, next_token_logits=logits, sampling_info=info, max_top_k=None,
            uniform_top_k_value=None)
        if mode == "real-draft-token":
            target_predict = logits.argmax(-1).view(bs, B)
    commit = acc.to(torch.int32) + 1
    out = torch.zeros(bs, B, dtype=torch.int64)
    # what DFlashWorkerV2.forward_batch_generation does after either accept (SIMULATE_ACC_LEN > 0)
    assert dw.SIMULATE_ACC_LEN == 2.5
    dw.apply_dflash_simulated_acceptance(
        candidates=cand, target_predict=target_predict, accept_len=acc, commit_lens=commit,
        bonus=bonus, out_tokens=out, simulate_acc_len=dw.SIMULATE_ACC_LEN,
        simulate_acc_method=dw.SIMULATE_ACC_METHOD, simulate_acc_token_mode=dw.SIMULATE_ACC_TOKEN_MODE)
    c = int(commit[0])
    assert c in (2, 3) and bool((commit == c).all()) and bool((acc == c - 1).all())
    if mode == "real-draft-token":
        assert torch.equal(out[:, : c - 1], cand[:, 1:c])
        assert torch.equal(bonus, target_predict[:, c - 1]) and torch.equal(out[:, c - 1], bonus)
    else:
        assert bool((out == 100).all()) and bool((bonus == 100).all())
    lengths.append(c)
mean = sum(lengths) / len(lengths)
assert abs(mean - 2.5) < 0.12, mean
# the factory refuses a scheduler whose SGLang constants differ from the launcher's config
dw.SIMULATE_ACC_LEN = 4.0
try:
    plugin.check_simulated_acceptance(cfg)
except plugin.DominoPluginError as exc:
    assert "differs between the launcher" in str(exc)
    print("SIM ok", round(mean, 3))
"""


@pytest.mark.sglang
@pytest.mark.parametrize("token_mode", ["fixed", "real-draft-token"])
def test_simulated_acceptance_follows_the_value_on_both_verify_paths(tmp_path, token_mode):
    target, draft = write_pair(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOMINO_TREE_")}
    env.update(SGLANG_PLUGINS="domino", SGLANG_SIMULATE_ACC_LEN="2.5",
               SGLANG_SIMULATE_ACC_METHOD="match-expected",
               SGLANG_SIMULATE_ACC_TOKEN_MODE=token_mode)
    out = subprocess.run([sys.executable, "-c", _SIMULATE.format(here=str(HERE), target=target,
                                                                 draft=draft)],
                         env=env, capture_output=True, text=True, timeout=240)
    assert any(x.startswith("SIM ok") for x in out.stdout.splitlines()), (out.stdout[-2000:],
                                                                         out.stderr[-4000:])


# ---- --speculative-adaptive (parsed, not applied) ---------------------------------------------
def test_adaptive_policy_parsing(tmp_path):
    from domino_sglang.config import ConfigError
    from domino_sglang.sglang_plugin.serve_config import parse_adaptive_policy

    good = tmp_path / "a.json"
    good.write_text(json.dumps({"comment": "ignored like SGLang", "16": {"candidate_steps": [0, 1]},
                                "1": {"candidate_steps": [7, 3, 3], "up_hysteresis": 0.1}}))
    pol = parse_adaptive_policy(str(good), block_size=8)
    assert [s.batch_size for s in pol.slots] == [1, 16]
    assert pol.slots[0].candidate_steps == (3, 7) and pol.slots[0].up_hysteresis == 0.1
    assert pol.slots[0].ema_alpha == 0.2 and pol.candidate_steps == (0, 1, 3, 7)
    default = parse_adaptive_policy(None, block_size=8,
                                    default={"1": {"candidate_steps": [1, 3, 7]}})
    assert default.source == "domino-default" and default.candidate_steps == (1, 3, 7)
    own = parse_adaptive_policy(None, block_size=16)  # Domino's: widths 16, 8, 4, 1
    assert [(s.batch_size, s.candidate_steps) for s in own.slots] == [(1, (0, 3, 7, 15))]
    for cfg, match in (([1], "expected a JSON object"),
                       ({"x": {}}, "at least one integer-string batch-size key"),
                       ({"1": {"candidate_steps": []}}, "non-empty list"),
                       ({"1": {"candidate_steps": [1, -1]}}, "non-negative ints"),
                       ({"1": {"candidate_steps": [9]}}, r"\[9\] exceed the 7 proposals"),
                       ({"1": {"candidate_steps": [1], "ema": 0.1}}, r"unknown keys \['ema'\]"),
                       ({"1": {"candidate_steps": [1], "warmup_batches": 1.5}},
                        "warmup_batches=1.5")):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(cfg))
        with pytest.raises(ConfigError, match=match):
            parse_adaptive_policy(str(bad), block_size=8)
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_adaptive_policy(str(bad), block_size=8)


def test_adaptive_is_off_at_tensor_parallel(tmp_path):
    """--tp-size >= 2: every rank would time its own rounds and choose its own width (ranks
    verifying different widths run different collectives), so the policy is off there, and an
    explicit --speculative-adaptive is refused by name; at --tp-size 1 the same flags give the
    policy."""
    import types

    from domino_sglang.config import ConfigError
    from domino_sglang.sglang_plugin.options import DeveloperSwitches
    from domino_sglang.sglang_plugin.serve_config import resolve_adaptive

    shape = {"tree_topk": 1, "block_size": 8, "topk_source": "default"}

    def sa(tp, asked=False, path=None):
        return types.SimpleNamespace(tp_size=tp, speculative_adaptive=asked,
                                     speculative_adaptive_config=path)

    assert resolve_adaptive(sa(1), shape, DeveloperSwitches(), False).enabled
    off = resolve_adaptive(sa(2), shape, DeveloperSwitches(), False)
    assert not off.enabled and off.source == "--tp-size 2"
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"1": {"candidate_steps": [1, 3]}}))
    assert resolve_adaptive(sa(1, True, str(path)), shape, DeveloperSwitches(), False).enabled
    for asked, p in ((True, None), (False, str(path))):
        with pytest.raises(ConfigError, match=r"--speculative-adaptive with --tp-size 4: .*"
                                              r"--tp-size 1 only"):
            resolve_adaptive(sa(4, asked, p), shape, DeveloperSwitches(), False)


@pytest.mark.sglang
def test_adaptive_flag_read_before_sglang_disables_it(sg, tiny_pair, tmp_path, clean_env):
    from domino_sglang.sglang_plugin.serve_config import serve_config_of

    target, draft = tiny_pair
    path = tmp_path / "adaptive.json"
    path.write_text(json.dumps({"1": {"candidate_steps": [1, 3, 7]},
                                "32": {"candidate_steps": [0, 1]}}))
    with logged("domino_sglang.sglang_plugin.validate") as log:
        sa = _resolve(target, draft, "--speculative-adaptive",
                      "--speculative-adaptive-config", str(path))
    assert sa.speculative_adaptive is False  # read by the plugin, then cleared for SGLang
    pol = serve_config_of(sa).adaptive
    assert pol.source == str(path) and [s.batch_size for s in pol.slots] == [1, 32]
    assert pol.enabled
    assert any("adaptive verify width ON" in m and "[1, 2, 4, 8]" in m for m in log), log
    default = serve_config_of(_resolve(target, draft)).adaptive  # on by default, own policy
    assert default.enabled and default.source == "domino-default"
    sa = _resolve(target, draft, "--speculative-adaptive")
    assert serve_config_of(sa).adaptive.source == "domino-default"
    path.write_text(json.dumps({"1": {"candidate_steps": [12]}}))
    with pytest.raises(ValueError, match=r"--speculative-adaptive-config .*\[12\] exceed"):
        _resolve(target, draft, "--speculative-adaptive", "--speculative-adaptive-config",
                 str(path))


@pytest.mark.sglang
def test_adaptive_off_switches_and_tree_refusal(sg, tiny_pair, tmp_path, clean_env):
    """DOMINO_ADAPTIVE=0 and simulated acceptance turn the adaptive width off (kept in the
    config, enabled False, with the reason as its source); tree mode refuses the flag."""
    from domino_sglang.sglang_plugin.adaptive import policy_from_config
    from domino_sglang.sglang_plugin.serve_config import serve_config_of

    target, draft = tiny_pair
    cfg = serve_config_of(_resolve(target, draft))
    pol = policy_from_config(cfg)
    assert pol is not None and pol.widths_for(64) == (1, 2, 4, 8)  # the tiny pair's block is 8
    clean_env.setenv("DOMINO_ADAPTIVE", "0")
    with logged("domino_sglang.sglang_plugin.serve_config") as log:
        cfg = serve_config_of(_resolve(target, draft, "--speculative-adaptive"))
    assert not cfg.adaptive.enabled and cfg.adaptive.source == "DOMINO_ADAPTIVE=0"
    assert policy_from_config(cfg) is None and "adaptive verify width off" in cfg.describe()
    assert any("--speculative-adaptive" in m and "ignored" in m for m in log), log
    clean_env.delenv("DOMINO_ADAPTIVE")
    clean_env.setenv("SGLANG_SIMULATE_ACC_LEN", "3")
    cfg = serve_config_of(_resolve(target, draft))
    assert not cfg.adaptive.enabled and policy_from_config(cfg) is None
    clean_env.delenv("SGLANG_SIMULATE_ACC_LEN")
    tree = ("--speculative-eagle-topk", "2", "--speculative-num-draft-tokens", "12",
            "--grammar-backend", "none", "--page-size", "1")
    assert serve_config_of(_resolve(target, draft, *tree)).adaptive is None
    with pytest.raises(ValueError, match="adaptive verify width is chain-only"):
        _resolve(target, draft, *tree, "--speculative-adaptive")


def test_sampled_drafts_switch_and_its_refusals(sg, tiny_pair, clean_env):
    """DOMINO_SAMPLED_DRAFTS=1: in the config (and its log line) for a chain server; refused,
    naming the setting, in tree mode, with SGLang's sampled verify and under simulated
    acceptance."""
    from domino_sglang.sglang_plugin.options import read_developer_switches
    from domino_sglang.sglang_plugin.serve_config import serve_config_of

    assert read_developer_switches({}).sampled_drafts is False
    with pytest.raises(Exception, match="DOMINO_SAMPLED_DRAFTS='maybe'"):
        read_developer_switches({"DOMINO_SAMPLED_DRAFTS": "maybe"})
    target, draft = tiny_pair
    assert serve_config_of(_resolve(target, draft)).sampled_drafts is False
    clean_env.setenv("DOMINO_SAMPLED_DRAFTS", "1")
    cfg = serve_config_of(_resolve(target, draft))
    assert cfg.sampled_drafts and "DOMINO_SAMPLED_DRAFTS=1" in cfg.describe()
    tree = ("--speculative-eagle-topk", "2", "--speculative-num-draft-tokens", "12",
            "--grammar-backend", "none", "--page-size", "1")
    with pytest.raises(ValueError, match="DOMINO_SAMPLED_DRAFTS=1 with tree mode"):
        _resolve(target, draft, *tree)
    clean_env.setenv("DOMINO_SAMPLED_VERIFY", "sglang")
    with pytest.raises(ValueError, match="DOMINO_SAMPLED_VERIFY=sglang"):
        _resolve(target, draft)
    clean_env.delenv("DOMINO_SAMPLED_VERIFY")
    clean_env.setenv("SGLANG_SIMULATE_ACC_LEN", "3")
    with pytest.raises(ValueError, match="SGLANG_SIMULATE_ACC_LEN=3"):
        _resolve(target, draft)
