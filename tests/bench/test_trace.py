"""Per-round trace aggregation (domino_sglang.bench.trace) on a small synthetic Chrome trace, and
the profile script's dry run and orchestration against a fake server (loopback, CPU)."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from _loopback import free_base_port

from domino_sglang.bench import trace as tr

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCRIPT = ROOT / "benchmarks" / "profile_round.py"
CPU = {"pid": 100, "tid": 1}


def span(name, ts, dur, cat="user_annotation", **args):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, **CPU,
            **({"args": args} if args else {})}


def kern(name, ts, dur, corr, stream=7, cat="kernel"):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 0, "tid": stream,
            "args": {"correlation": corr, "device": 0}}


def api(name, ts, dur, corr):
    return span(name, ts, dur, cat="cuda_driver" if name.startswith("cu") and
                not name.startswith("cuda") else "cuda_runtime", correlation=corr)


def one_round(t0, corr0, extra_kernel=False):
    """One decode round at ``t0``: run_batch [0, 600) holding a draft step (an eager GEMM via an
    aten op), a verify step (one graph launch: attention + our GRU kernel on two streams,
    overlapping), then an eager GRU kernel and a memset outside the step spans."""
    c = corr0
    ev = [span("scheduler.run_batch", t0, 600),
          span("step[DECODE bs=2]", t0 + 50, 150),
          span("aten::mm", t0 + 60, 40, cat="cpu_op"),
          api("cudaLaunchKernel", t0 + 70, 10, c),
          kern("ampere_bf16_s16816gemm_bf16_128x64", t0 + 100, 200, c),
          span("step[TARGET_VERIFY bs=2]", t0 + 250, 250),
          api("cudaGraphLaunch", t0 + 260, 20, c + 1),
          kern("_fwd_kernel_stage1", t0 + 300, 200, c + 1, stream=7),
          kern("_gru_kernel", t0 + 400, 200, c + 1, stream=8),
          api("cuLaunchKernel", t0 + 520, 10, c + 2),
          kern("_gru_kernel", t0 + 700, 50, c + 2),
          api("cudaMemsetAsync", t0 + 540, 5, c + 3),
          kern("Memset (Device)", t0 + 800, 20, c + 3, cat="gpu_memset")]
    if extra_kernel:
        ev += [api("cudaLaunchKernel", t0 + 560, 10, c + 4),
               kern("void at::native::vectorized_elementwise_kernel<4>", t0 + 830, 100, c + 4)]
    return ev


def synthetic(extra_kernel=False):
    ev = [{"ph": "X", "cat": "Trace", "name": "PyTorch Profiler (0)", "ts": 0, "dur": 5000,
           **CPU},
          {"ph": "s", "cat": "ac2g", "name": "flow", "ts": 10, "id": 1, **CPU},
          # round 0: a prefill, not clean
          span("scheduler.run_batch", 0, 600),
          span("step[EXTEND bs=1 toks=20]", 50, 300),
          api("cudaLaunchKernel", 60, 5, 1),
          kern("ampere_bf16_s16816gemm_bf16_128x64", 100, 200, 1)]
    ev += one_round(1000, 10, extra_kernel) + one_round(2000, 20, extra_kernel)
    # round 2 also: a kernel launched from process_batch_result that runs past the window end
    ev += [span("scheduler.process_batch_result", 2700, 250),
           api("cudaLaunchKernel", 2900, 5, 30),
           kern("void at::native::index_elementwise_kernel", 2950, 150, 30),
           # the last run_batch: closes round 2; its kernels are outside the window
           span("scheduler.run_batch", 3000, 600), span("step[DECODE bs=2]", 3050, 100),
           api("cudaLaunchKernel", 3060, 5, 40), kern("_fwd_kernel_stage1", 3100, 100, 40)]
    return {"traceEvents": ev, "displayTimeUnit": "ms"}


def test_union_and_clip():
    assert tr.union_length([]) == 0
    assert tr.union_length([(0, 10), (5, 15), (20, 30), (22, 25), (30, 31), (40, 40)]) == 26
    assert tr.union_length([(3, 4), (0, 10)]) == 10
    assert tr.clip(0, 10, 5, 20) == 5 and tr.clip(0, 10, 10, 20) == 0 and tr.clip(2, 3, 0, 9) == 1


def test_kernel_category_and_our_kernel_names():
    ours = tr.triton_kernel_names(ROOT / "kernels")
    assert ours["_gru_kernel"] == "domino_head" and ours["_pre_kernel"] == "domino_head"
    assert ours["_tree_verify_kernel"] == "domino_tree"
    assert "tree_verify_ref" not in ours
    cases = {"_gru_kernel": "domino_head",
             "ncclDevKernel_AllReduce_Sum_bf16_RING_LL": "nccl",
             "_fwd_kernel_stage2": "attention",
             "create_flashinfer_kv_indices_triton": "kv_index",
             "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64": "gemm",
             "nvjet_hsh_64x32_64x16_2x1_v_bz_TNT": "gemm",
             "void at::native::reduce_kernel<512, 1, ReduceOp<float, ArgMaxOps<float>>>":
                 "argmax_sampling",
             "void flashinfer::norm::RMSNormKernel<8, bf16>": "norm_rope_act",
             "flash_fwd_splitkv_kernel": "attention",
             "void at::native::normal_kernel<float>": "argmax_sampling",
             "fused_add_rmsnorm_kernel": "norm_rope_act",
             "void at::native::vectorized_elementwise_kernel<4, FillFunctor>": "elementwise_copy",
             "some_unknown_kernel": "other"}
    for name, want in cases.items():
        assert tr.kernel_category(name, "kernel", ours) == want, name
    assert tr.kernel_category("Memcpy DtoD (Device -> Device)", "gpu_memcpy", ours) == \
        "copy_memset"


def test_rounds_skip_prefill_and_other_batch_sizes():
    ev = tr._complete_events(synthetic())
    r = tr.find_rounds(ev, batch_size=2)
    assert (r["found"], r["clean"], r["rounds"]) == (3, 2, 2)
    assert r["window"] == (1000.0, 3000.0) and r["durations_us"] == [1000.0, 1000.0]
    assert r["modes"]["EXTEND"] == 1 and r["batch_sizes"] == {"1": 1, "2": 2}
    assert r["batch_size_match"] == "exact"
    # none ran 3: rounds one request short still measure that load, and say so
    near = tr.find_rounds(ev, batch_size=3)
    assert (near["clean"], near["rounds"]) == (2, 2)
    assert near["batch_size_match"] == "near: rounds of 2-3 requests"
    bad = tr.analyze(synthetic(), batch_size=5)
    assert "gpu" not in bad and "no whole clean round" in bad["error"]


def test_analyze_per_round_maths():
    ours = tr.triton_kernel_names(ROOT / "kernels")
    res = tr.analyze(synthetic(), batch_size=2, ours=ours)
    g = res["gpu"]
    # window [1000, 3000): 2 rounds. busy per round 1: [100,600) + [700,750) + [800,820) = 570
    # (the GRU kernel on stream 8 overlaps attention on stream 7); round 2 adds the clipped
    # [2950, 3000) of the index kernel
    assert g["wall_ms"] == pytest.approx(1.0)
    assert g["busy_ms"] == pytest.approx((570 + 620) / 2 / 1e3)
    assert g["idle_ms"] == pytest.approx((2000 - 1190) / 2 / 1e3)
    assert g["kernel_sum_ms"] == pytest.approx((670 * 2 + 50) / 2 / 1e3)
    assert g["kernels_in_graphs"] == 2 and g["kernels_eager"] == 2.5
    cats = res["categories"]
    assert cats["gemm"] == {"ms": 0.2, "calls": 1.0}
    assert cats["attention"]["ms"] == pytest.approx(0.2)
    assert cats["domino_head"] == {"ms": 0.25, "calls": 2.0}
    assert cats["copy_memset"]["ms"] == pytest.approx(0.02)
    assert cats["elementwise_copy"] == {"ms": 0.025, "calls": 0.5}
    gru = next(k for k in res["top_kernels"] if k["name"] == "_gru_kernel")
    assert gru["calls"] == 2 and gru["in_graph_frac"] == 0.5 and gru["us_per_call"] == 125
    assert gru["launched_from"] == ["scheduler.run_batch", "step[TARGET_VERIFY]"]
    st = res["stages_gpu_ms"]
    assert st["step[TARGET_VERIFY]"] == pytest.approx(0.4)
    assert st["step[DECODE]"] == pytest.approx(0.2)
    assert st["scheduler.run_batch"] == pytest.approx(0.07)
    assert st["scheduler.process_batch_result"] == pytest.approx(0.025)
    h = res["host"]
    assert (h["graph_launches"], h["kernel_launches"], h["syncs"]) == (1, 2.5, 0)
    ops = {o["name"]: o for o in res["top_cpu_ops"]}
    # run_batch: 600 minus its children (150 + 250 + 10 + 5) = 185 us self per round
    assert ops["scheduler.run_batch"]["self_ms"] == pytest.approx(0.185)
    assert ops["scheduler.run_batch"]["total_ms"] == pytest.approx(0.6)
    assert ops["aten::mm"]["self_ms"] == pytest.approx(0.03) and ops["aten::mm"]["calls"] == 1
    assert ops["step[DECODE]"]["self_ms"] == pytest.approx(0.11)
    assert res["spans"]["scheduler.process_batch_result"]["calls"] == 0.5
    assert res["cuda_api"]["cudaGraphLaunch"] == {"calls": 1.0, "ms": 0.02}
    assert res["host"]["thread_busy_ms"] == {"100/1": pytest.approx((1200 + 250) / 2 / 1e3)}


def test_compare_and_markdown():
    ours = tr.triton_kernel_names(ROOT / "kernels")
    base = tr.analyze(synthetic(), batch_size=2, ours=ours)
    other = tr.analyze(synthetic(extra_kernel=True), batch_size=2, ours=ours)
    d = tr.compare(base, other)
    assert d["scalars"]["gpu.kernel_sum_ms"]["diff"] == pytest.approx(0.1)
    assert d["scalars"]["host.kernel_launches"]["diff"] == pytest.approx(1.0)
    top = d["kernels"][0]
    assert top["name"].startswith("void at::native::vectorized_elementwise") and \
        top["diff"] == pytest.approx(0.1) and top["calls_base"] == 0
    cat = next(r for r in d["categories"] if r["name"] == "elementwise_copy")
    assert cat["diff"] == pytest.approx(0.1)
    assert tr.compare(base, {"error": "x"}) == {"error": "one side has no analysis"}
    md = "\n".join(tr.markdown({"dflash": {"2": base}, "domino": {"2": other}}, {"2": d}))
    assert "## Batch 2: domino minus dflash" in md and "| 2 | domino | 1.000 |" in md
    assert "vectorized_elementwise" in md


def test_load_trace_and_gzip_completeness(tmp_path):
    p = tmp_path / "t.trace.json.gz"
    blob = gzip.compress(json.dumps(synthetic()).encode())
    p.write_bytes(blob[: len(blob) // 2])
    assert not tr.gzip_complete(p)
    p.write_bytes(blob)
    assert tr.gzip_complete(p)
    assert len(tr.load_trace(p)["traceEvents"]) == len(synthetic()["traceEvents"])
    q = tmp_path / "list.json"
    q.write_text(json.dumps(synthetic()["traceEvents"]))
    assert "traceEvents" in tr.load_trace(q)
    q.write_text(json.dumps({"nope": 1}))
    with pytest.raises(ValueError, match="traceEvents"):
        tr.load_trace(q)


# ---- benchmarks/profile_round.py -------------------------------------------------------------
def _free_base_port(n=4):
    return free_base_port(n)


def test_profile_script_dry_run_and_bad_args():
    out = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--gpu-mem-gb", "80"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert text.count("sglang.launch_server") == 2
    assert "drafter-dflash" in text and "drafter-domino" in text
    assert text.count("--mem-fraction-static 0.300") == 2 and "--cuda-graph-bs 1 2 4 8 16 32 64" \
        in text
    assert text.count("/start_profile") == 6 and '"num_steps": 30' in text
    assert '"with_stack": false' in text and '"activities": ["CPU", "GPU"]' in text
    plan = json.loads(text[: text.index("\n# servers")])
    assert plan["order"] == [[1, "dflash"], [1, "domino"], [16, "dflash"], [16, "domino"],
                             [64, "dflash"], [64, "domino"]]
    ctx = plan["pair"]["context_length"]
    assert ctx and plan["prompts"]["max_new_tokens"]["max"] < ctx <= 2048 + 2048
    bad = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--batch-sizes", "0,16"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "--batch-sizes" in bad.stderr and ">= 1" in bad.stderr
    bad = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--steps", "2"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "--steps 2" in bad.stderr


def test_profile_script_end_to_end_against_fake_servers(tmp_path):
    pytest.importorskip("aiohttp")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import profile_round as script

    out = tmp_path / "out"
    rc = script.main(["--batch-sizes", "1,3", "--steps", "5", "--max-new-tokens", "1500",
                      "--warmup-tokens", "4", "--settle-s", "0.1", "--gpu-mem-gb", "80",
                      "--startup-timeout-s", "60", "--trace-timeout-s", "20",
                      "--base-port", str(_free_base_port()), "--commit", "feedbee",
                      "--out-dir", str(out),
                      "--launcher", f"{sys.executable} {HERE / 'fake_profile_server.py'}"])
    files = sorted(out.glob("profile_round_*.json"))
    assert len(files) == 1 and files[0].with_suffix(".md").is_file()
    data = json.loads(files[0].read_text())
    assert rc == 0, data["errors"]
    assert data["meta"]["git"]["commit"] == "feedbee"
    for b in ("1", "3"):
        df, dom = data["results"]["dflash"][b], data["results"]["domino"][b]
        assert df["rounds"]["measured"] == 5 and df["rounds"]["batch_sizes"] == {b: 5}
        assert df["profile"]["loads_before"]["num_running_reqs"] == int(b)
        assert df["profile"]["trace"]["file"].startswith(f"dflash_b{b}_")
        assert df["gpu"]["busy_ms"] == pytest.approx(0.3) and df["gpu"]["kernels_eager"] == 0
        assert dom["gpu"]["busy_ms"] == pytest.approx(0.5) and dom["gpu"]["kernels_eager"] == 1
        assert dom["categories"]["domino_head"]["ms"] == pytest.approx(0.2)
        d = data["diff"][b]
        assert d["scalars"]["gpu.busy_ms"]["diff"] == pytest.approx(0.2)
        assert d["kernels"][0]["name"] == "_gru_kernel"
        assert df["profile"]["requests"]["failed"] == 0
    assert not list(out.glob("traces_*"))  # raw traces dropped without --keep-traces
    assert len(list(out.glob("*_server_*.log"))) == 2
    md = files[0].with_suffix(".md").read_text()
    assert "## Batch 3: domino minus dflash" in md and "_gru_kernel" in md
