"""llguidance vs xgrammar on this machine: the cost of each grammar engine for structured outputs.

Usage:
    .venv/bin/python benchmarks/grammar_engines.py [--rounds 5] [--batch 16] [--json-out FILE]
        [--models qwen2.5-coder-0.5b smollm2-135m]

For the two real tokenizers of the project (Qwen2.5-Coder-0.5B GGUF, 151k vocab; SmolLM2-135M GGUF,
49k vocab), loaded through `maxcli.pipelines.lib.tokenizer.TextTokenizer`, it measures for each engine:

1. tokenizer preparation: `llguidance.LLTokenizer(tokenizer_json)` against
   `PreTrainedTokenizerFast(tokenizer_object=...)` + `xgrammar.TokenizerInfo.from_huggingface`;
2. grammar compile time for five grammars (flat JSON schema, nested schema with arrays / enums /
   required / anyOf / $ref, any JSON object, a date regex, a choice among 3 strings), and the time to
   the first mask (compile + matcher + first mask): llguidance builds its lexer lazily, xgrammar
   precomputes its token mask cache at compile time, so only the second figure compares like with like;
3. per-token mask time while walking a real valid output (a JSON instance of the nested schema, and the
   same text under the any-JSON grammar) token by token, EOS included, on a freshly compiled grammar
   each round (so llguidance's lazy work is counted): mean and p99 microseconds, single-threaded; then
   a batch of `--batch` matchers (staggered by one token each) through each engine's parallel API
   (`BatchGrammarMatcher.batch_fill_next_token_bitmask` / `fill_next_token_bitmask_par` with an
   `LLExecutor`), wall time per batched step, both with as many threads as CPUs;
4. applying a [batch, vocab] int32 bitmask (a real one from the batched walk, and random bits) to
   float32 logits on CPU: `xgrammar.apply_token_bitmask_inplace` (C++ CPU kernel),
   `llguidance.torch.apply_token_bitmask_inplace` (torch.compile; its first call, which compiles, is
   reported apart), `llguidance.numpy.apply_token_bitmask_inplace`, and the plain eager torch unpack +
   masked_fill that maxcli/engine/structured.py uses; with torch at 1 thread and at its default thread
   count (OpenMP kernels stall when another process holds a core);
5. import time of each package (and of torch alone, for reference) in a fresh interpreter, how many
   modules it loads, and which heavy packages (torch, transformers, triton, ...) it pulls in.

Every figure is the median over `--rounds` rounds (at least 3). All figures go to `--json-out`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import time

MODELS = {
    "qwen2.5-coder-0.5b": ".cache/test-models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "smollm2-135m": ".cache/test-models/SmolLM2-135M-Instruct.Q4_1.gguf",
}
HEAVY = ["torch", "transformers", "triton", "numpy", "pydantic", "tvm_ffi", "tokenizers"]
CPUS = os.cpu_count() or 1

FLAT_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "email": {"type": "string"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
NESTED_SCHEMA = {
    "$defs": {
        "person": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "email": {"type": "string"}},
            "required": ["name"],
            "additionalProperties": False,
        },
        "change": {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "lines_added": {"type": "integer"},
                "lines_removed": {"type": "integer"},
            },
            "required": ["path", "lines_added", "lines_removed"],
            "additionalProperties": False,
        },
    },
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "severity": {"enum": ["low", "medium", "high", "critical"]},
        "reporter": {"$ref": "#/$defs/person"},
        "assignees": {"type": "array", "items": {"$ref": "#/$defs/person"}},
        "labels": {"type": "array", "items": {"type": "string"}},
        "estimate_hours": {"anyOf": [{"type": "number"}, {"type": "null"}]},
        "changes": {"type": "array", "items": {"$ref": "#/$defs/change"}},
        "resolved": {"type": "boolean"},
    },
    "required": ["title", "severity", "reporter", "changes", "resolved"],
    "additionalProperties": False,
}
# A valid instance of NESTED_SCHEMA, keys in schema order (xgrammar's default requires the order).
NESTED_INSTANCE = {
    "title": "Tokenizer drops the trailing newline when decoding streamed chunks",
    "severity": "high",
    "reporter": {"name": "Ada Lovelace", "email": "ada@example.com"},
    "assignees": [{"name": "Grace Hopper", "email": "grace@example.org"}, {"name": "Alan Turing"}],
    "labels": ["bug", "tokenizer", "streaming"],
    "estimate_hours": 3.5,
    "changes": [
        {"path": "maxcli/pipelines/lib/tokenizer.py", "lines_added": 12, "lines_removed": 4},
        {"path": "tests/test_tokenizer.py", "lines_added": 30, "lines_removed": 0},
    ],
    "resolved": False,
}
DATE_REGEX = r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
CHOICES = ["positive", "negative", "neutral"]
GRAMMARS = ["json_flat", "json_nested", "json_object", "regex_date", "choice3"]


def median(xs):
    return statistics.median(xs)


def p99(xs):
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(0.99 * (len(s) - 1))))]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


# ---------------------------------------------------------------- 5. imports (fresh interpreters)

IMPORT_PROBE = """
import sys, time, json
before = set(sys.modules)
t = time.perf_counter()
import {mod}
dt = time.perf_counter() - t
new = set(sys.modules) - before
print(json.dumps({{"s": dt, "modules": len(new), "pulls": sorted({{m.split('.')[0] for m in new}} & set({heavy}))}}))
"""


def measure_import(mod: str, rounds: int) -> dict:
    runs = []
    for _ in range(rounds):
        out = subprocess.run([sys.executable, "-c", IMPORT_PROBE.format(mod=mod, heavy=HEAVY)],
                             capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    dist = mod.split(".")[0]
    requires = [r.split(";")[0].split()[0] for r in (importlib.metadata.requires(dist) or []) if "extra" not in r]
    return {"import_s": median([r["s"] for r in runs]), "runs_s": [r["s"] for r in runs],
            "modules": runs[-1]["modules"], "pulls": runs[-1]["pulls"], "requires": requires}


# ---------------------------------------------------------------- the two engines behind one interface

class LLG:
    name = "llguidance"

    def __init__(self, hf_tok, eos):
        import llguidance
        import llguidance.torch as llgt
        self.llg, self.llgt = llguidance, llgt
        self.tok = llguidance.LLTokenizer(hf_tok.to_str(), eos_token=eos)
        self.vocab = self.tok.vocab_size
        self.executor = llguidance.LLExecutor(num_threads=CPUS)

    @staticmethod
    def prepare(hf_tok, eos):
        import llguidance
        return llguidance.LLTokenizer(hf_tok.to_str(), eos_token=eos)

    def compile(self, kind):  # llguidance "compiles" when the matcher is built; lexing is lazy
        M = self.llg.LLMatcher
        grm = {"json_flat": lambda: M.grammar_from_json_schema(FLAT_SCHEMA),
               "json_nested": lambda: M.grammar_from_json_schema(NESTED_SCHEMA),
               "json_object": lambda: M.grammar_from_json_schema({"type": "object"}),
               "regex_date": lambda: M.grammar_from_regex(DATE_REGEX),
               "choice3": lambda: M.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in CHOICES)),
               }[kind]()
        m = M(self.tok, grm, log_level=0)
        assert not m.is_error(), m.get_error()
        return m

    def matcher(self, compiled):
        return compiled.deep_copy()

    def bitmask(self, n):
        return self.llgt.allocate_token_bitmask(n, self.vocab)

    def fill(self, m, bm, i=0):
        self.llgt.fill_next_token_bitmask(m, bm, i)

    def accept(self, m, tok):
        return m.consume_token(tok)

    def done(self, m):
        return m.is_stopped() or m.is_accepting()

    def fill_batch(self, ms, bm):
        self.llgt.fill_next_token_bitmask_par(self.executor, [(m, i) for i, m in enumerate(ms)], bm)

    def accept_batch(self, ms, toks):
        return self.llgt.consume_token_par(self.executor, list(zip(ms, toks)))


class XGR:
    name = "xgrammar"

    def __init__(self, hf_tok, eos):
        import xgrammar
        self.xgr = xgrammar
        self.info = self.prepare(hf_tok, eos)
        self.vocab = self.info.vocab_size
        self.batcher = xgrammar.BatchGrammarMatcher(max_threads=CPUS)

    @staticmethod
    def prepare(hf_tok, eos):
        import transformers
        import xgrammar
        fast = transformers.PreTrainedTokenizerFast(tokenizer_object=hf_tok, eos_token=hf_tok.id_to_token(eos[0]))
        return xgrammar.TokenizerInfo.from_huggingface(fast, vocab_size=hf_tok.get_vocab_size(), stop_token_ids=eos)

    def compile(self, kind):  # fresh compiler with the cache off, so every round really compiles
        c = self.xgr.GrammarCompiler(self.info, max_threads=CPUS, cache_enabled=False)
        return {"json_flat": lambda: c.compile_json_schema(FLAT_SCHEMA),
                "json_nested": lambda: c.compile_json_schema(NESTED_SCHEMA),
                "json_object": lambda: c.compile_builtin_json_grammar(),
                "regex_date": lambda: c.compile_regex(DATE_REGEX),
                "choice3": lambda: c.compile_grammar("root ::= " + " | ".join(json.dumps(x) for x in CHOICES)),
                }[kind]()

    def matcher(self, compiled):
        return self.xgr.GrammarMatcher(compiled)

    def bitmask(self, n):
        return self.xgr.allocate_token_bitmask(n, self.vocab)

    def fill(self, m, bm, i=0):
        m.fill_next_token_bitmask(bm, i)

    def accept(self, m, tok):
        return m.accept_token(tok)

    def done(self, m):
        return m.is_terminated()

    def fill_batch(self, ms, bm):
        self.batcher.batch_fill_next_token_bitmask(ms, bm)

    def accept_batch(self, ms, toks):
        return self.xgr.BatchGrammarMatcher.batch_accept_token(ms, toks)


# ---------------------------------------------------------------- 1-4. per tokenizer

def bench_compile(eng, rounds):
    out = {}
    for kind in GRAMMARS:
        comp, first = [], []
        for _ in range(rounds):
            t = time.perf_counter()
            compiled = eng.compile(kind)
            comp.append(time.perf_counter() - t)
            m, bm = eng.matcher(compiled), eng.bitmask(1)
            eng.fill(m, bm)
            first.append(time.perf_counter() - t)
        out[kind] = {"compile_ms": median(comp) * 1e3, "first_mask_ms": median(first) * 1e3}
    return out


def bench_walk(eng, kind, ids, rounds, batch):
    single_mean, single_p99, adv_mean = [], [], []
    for _ in range(rounds):  # a fresh compile each round: llguidance's lazy lexer work counts, as per request
        compiled = eng.compile(kind)
        m, bm, ts, adv = eng.matcher(compiled), eng.bitmask(1), [], []
        for tok in ids:
            t0 = time.perf_counter()
            eng.fill(m, bm)
            t1 = time.perf_counter()
            ok = eng.accept(m, tok)
            adv.append(time.perf_counter() - t1)
            ts.append(t1 - t0)
            assert ok, f"{eng.name} rejected token {tok} under {kind}"
        assert eng.done(m), f"{eng.name} did not finish under {kind}"
        single_mean.append(statistics.mean(ts) * 1e6)
        single_p99.append(p99(ts) * 1e6)
        adv_mean.append(statistics.mean(adv) * 1e6)

    # batch: matcher i starts i tokens in, so the batch holds different grammar states
    steps = len(ids) - batch + 1
    b_mean, b_p99 = [], []
    for _ in range(rounds):
        compiled = eng.compile(kind)
        ms = [eng.matcher(compiled) for _ in range(batch)]
        for i, m in enumerate(ms):
            for tok in ids[:i]:
                assert eng.accept(m, tok)
        bm, ts = eng.bitmask(batch), []
        for s in range(steps):
            t0 = time.perf_counter()
            eng.fill_batch(ms, bm)
            ts.append(time.perf_counter() - t0)
            if s == steps // 2:
                eng.mid_batch_mask = bm.clone()  # a real mask, reused by bench_apply
            assert all(eng.accept_batch(ms, [ids[s + i] for i in range(batch)]))
        b_mean.append(statistics.mean(ts) * 1e6)
        b_p99.append(p99(ts) * 1e6)
    return {"tokens": len(ids), "mask_mean_us": median(single_mean), "mask_p99_us": median(single_p99),
            "advance_mean_us": median(adv_mean), "batch": batch, "batch_steps": steps,
            "batch_step_mean_us": median(b_mean), "batch_step_p99_us": median(b_p99),
            "batch_per_seq_us": median(b_mean) / batch}


APPLY = ("xgrammar", "llguidance_torch", "llguidance_numpy", "eager_torch")


def eager_apply(logits, words):
    """Plain eager torch, the unpacking maxcli/engine/structured.py does: no torch.compile, no warm-up."""
    import torch
    bits = torch.arange(32, dtype=torch.int32)
    allowed = ((words[:, :, None] >> bits) & 1).bool().reshape(words.shape[0], -1)[:, :logits.shape[1]]
    logits.masked_fill_(~allowed, float("-inf"))


def bench_apply(vocab, batch, rounds, real_bits, iters=30):
    """Median us per call of each apply function, for (mask kind, torch threads) pairs."""
    import torch
    import llguidance.numpy as llgn
    import llguidance.torch as llgt
    import xgrammar as xgr

    gen = torch.Generator().manual_seed(0)
    src = torch.randn(batch, vocab, generator=gen)
    random_bits = torch.randint(-2**31, 2**31 - 1, (batch, (vocab + 31) // 32), dtype=torch.int32, generator=gen)
    out = {}
    t = time.perf_counter()
    llgt.apply_token_bitmask_inplace(src.clone(), random_bits)
    out["llguidance_torch_first_call_s"] = time.perf_counter() - t
    t = time.perf_counter()
    xgr.apply_token_bitmask_inplace(src.clone(), random_bits)
    out["xgrammar_first_call_s"] = time.perf_counter() - t

    default_threads = torch.get_num_threads()
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        for mask_kind, bits in (("real", real_bits), ("random", random_bits)):
            ref = src.clone()
            xgr.apply_token_bitmask_inplace(ref, bits)
            bits_np = bits.numpy()
            fns = {
                "xgrammar": lambda l: xgr.apply_token_bitmask_inplace(l, bits),
                "llguidance_torch": lambda l: llgt.apply_token_bitmask_inplace(l, bits),
                "llguidance_numpy": lambda l: llgn.apply_token_bitmask_inplace(l.numpy(), bits_np),
                "eager_torch": lambda l: eager_apply(l, bits),
            }
            row = {}
            for name in APPLY:
                per_round = []
                for _ in range(rounds):
                    ts = []
                    for _ in range(iters):
                        logits = src.clone()
                        t = time.perf_counter()
                        fns[name](logits)
                        ts.append(time.perf_counter() - t)
                    assert torch.equal(logits, ref), f"{name} masked differently from xgrammar"
                    per_round.append(median(ts) * 1e6)
                row[name] = median(per_round)
            out[f"{mask_kind}_mask_{threads}_threads_us"] = row
    torch.set_num_threads(default_threads)
    return out


def bench_model(label, path, rounds, batch):
    from maxcli.pipelines.lib.tokenizer import TextTokenizer

    t = TextTokenizer(path)
    hf_tok, eos = t.delegate._tokenizer, sorted(t.eos_token_ids)
    text = json.dumps(NESTED_INSTANCE)
    ids = hf_tok.encode(text, add_special_tokens=False).ids + [eos[0]]
    res = {"path": path, "vocab": hf_tok.get_vocab_size(), "eos": eos, "walk_tokens": len(ids), "engines": {}}
    for cls in (LLG, XGR):
        prep = [timed(lambda: cls.prepare(hf_tok, eos))[0] for _ in range(rounds)]
        eng = cls(hf_tok, eos)
        r = {"prepare_s": median(prep), "vocab": eng.vocab, "compile": bench_compile(eng, rounds),
             "walk": {k: bench_walk(eng, k, ids, rounds, batch) for k in ("json_nested", "json_object")}}
        res["engines"][eng.name] = r
        real_mask = eng.mid_batch_mask  # ends as xgrammar's, from the json_object batch walk
        print(f"  [{label}] {eng.name} done", file=sys.stderr, flush=True)
    res["apply"] = bench_apply(res["vocab"], batch, rounds, real_mask)
    return res


# ---------------------------------------------------------------- report

def print_tables(results):
    imp = results["imports"]
    print("\nimport (fresh interpreter, median)")
    print(f"{'module':<18}{'import s':>10}{'modules':>9}  pulls in")
    for mod, r in imp.items():
        print(f"{mod:<18}{r['import_s']:>10.3f}{r['modules']:>9}  {', '.join(r['pulls']) or '-'}")
    for label, res in results["models"].items():
        L, X = res["engines"]["llguidance"], res["engines"]["xgrammar"]
        print(f"\n{label}  vocab {res['vocab']}  walk {res['walk_tokens']} tokens (nested instance + EOS)")
        print(f"{'figure':<40}{'llguidance':>12}{'xgrammar':>12}")
        row = lambda name, a, b, f="{:.2f}": print(f"{name:<40}{f.format(a):>12}{f.format(b):>12}")
        row("tokenizer prepare (s)", L["prepare_s"], X["prepare_s"], "{:.3f}")
        for g in GRAMMARS:
            row(f"compile {g} (ms)", L["compile"][g]["compile_ms"], X["compile"][g]["compile_ms"])
            row(f"  compile+first mask {g} (ms)", L["compile"][g]["first_mask_ms"], X["compile"][g]["first_mask_ms"])
        for k in ("json_nested", "json_object"):
            lw, xw = L["walk"][k], X["walk"][k]
            row(f"mask/token {k} mean (us)", lw["mask_mean_us"], xw["mask_mean_us"], "{:.1f}")
            row(f"mask/token {k} p99 (us)", lw["mask_p99_us"], xw["mask_p99_us"], "{:.1f}")
            row(f"advance/token {k} mean (us)", lw["advance_mean_us"], xw["advance_mean_us"], "{:.1f}")
            row(f"batch {lw['batch']} step {k} mean (us)", lw["batch_step_mean_us"], xw["batch_step_mean_us"], "{:.1f}")
            row(f"batch {lw['batch']} step {k} p99 (us)", lw["batch_step_p99_us"], xw["batch_step_p99_us"], "{:.1f}")
        a = res["apply"]
        title = f"apply bitmask [{results['batch']}, {res['vocab']}] f32 (us)"
        print(f"{title:<40}{'xgrammar':>12}{'llg.torch':>12}{'llg.numpy':>12}{'eager':>12}")
        for key, r in a.items():
            if key.endswith("_us"):
                name = key[:-3].replace("_", " ")
                print(f"  {name:<38}" + "".join(f"{r[n]:>12.1f}" for n in APPLY))
        print(f"apply first call (s): xgrammar {a['xgrammar_first_call_s']:.3f}, "
              f"llguidance.torch {a['llguidance_torch_first_call_s']:.3f} (torch.compile)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds per figure, median reported (min 3)")
    ap.add_argument("--batch", type=int, default=16, help="matchers per batched step / rows of logits")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--json-out", help="write all figures to this JSON file")
    args = ap.parse_args()
    rounds = max(3, args.rounds)

    t0 = time.perf_counter()
    results = {"cpus": CPUS, "rounds": rounds, "batch": args.batch, "python": sys.version.split()[0],
               "versions": {p: importlib.metadata.version(p) for p in ("llguidance", "xgrammar", "torch",
                                                                      "transformers", "triton")},
               "imports": {m: measure_import(m, rounds) for m in ("llguidance", "llguidance.torch", "xgrammar", "torch")},
               "models": {}}
    for label in args.models:
        results["models"][label] = bench_model(label, MODELS[label], rounds, args.batch)
    results["total_s"] = time.perf_counter() - t0
    print_tables(results)
    print(f"\ntotal {results['total_s']:.1f} s, {CPUS} CPUs, {rounds} rounds, versions {results['versions']}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
