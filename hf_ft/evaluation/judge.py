"""LLM-as-judge (optional): a second opinion on original vs fine-tuned answers.

For each item the judge sees the question, the reference answer and both models' answers (option
text), and gives each a 1–10 score and a winner. Every item is asked twice with the answers
swapped, so a judge that prefers "the first answer" cancels out. Unparseable replies are counted,
never guessed. Remote judges speak the OpenAI chat-completions protocol (vLLM, llama.cpp,
Ollama…) through huggingface_hub's InferenceClient; a local judge is a causal LM run by transformers'
text-generation pipeline.
"""

from __future__ import annotations

import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..core.errors import UserError

logger = logging.getLogger(__name__)

TOKEN_ENV = "HF_FT_JUDGE_API_KEY"  # also read: OPENAI_API_KEY
SYSTEM_PROMPT = "你是一位公正的閱卷老師。You are a strict, impartial grader of exam answers."
PROMPT = """請比較兩個回答與參考答案。Compare two answers to an exam question against the reference answer.

題目 Question: {question}
參考答案 Reference answer: {reference}

回答一 Answer 1: {first}
回答二 Answer 2: {second}

Give each answer a score from 1 (wrong) to 10 (fully correct) and say which is better.
Reply with JSON only: {{"score_1": <1-10>, "score_2": <1-10>, "winner": "1" | "2" | "tie"}}"""


@dataclass
class Verdict:
    score_1: int
    score_2: int
    winner: str  # "1", "2" or "tie"


def parse_verdict(reply: str) -> Verdict | None:
    """The first JSON object with the three fields, or `score_1: 7`-style lines; None if neither."""
    if not reply:
        return None
    for match in re.finditer(r"\{[^{}]*\}", reply, flags=re.S):
        try:
            obj = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        verdict = _verdict_from(obj.get("score_1"), obj.get("score_2"), obj.get("winner"))
        if verdict:
            return verdict
    fields = {}
    for key in ("score_1", "score_2", "winner"):
        m = re.search(rf'"?{key}"?\s*[:=]\s*"?([A-Za-z0-9]+)', reply)
        if m:
            fields[key] = m.group(1)
    return _verdict_from(fields.get("score_1"), fields.get("score_2"), fields.get("winner"))


def _verdict_from(s1, s2, winner) -> Verdict | None:
    try:
        s1, s2 = int(s1), int(s2)
    except (TypeError, ValueError):
        return None
    winner = str(winner).strip().lower() if winner is not None else ""
    winner = {"1": "1", "2": "2", "tie": "tie", "draw": "tie", "0": "tie"}.get(winner)
    if winner is None or not (1 <= s1 <= 10 and 1 <= s2 <= 10):
        return None
    return Verdict(s1, s2, winner)


def build_prompts(items: list[dict]) -> list[str]:
    """Two prompts per item: (original, fine-tuned) then (fine-tuned, original)."""
    prompts = []
    for item in items:
        for first, second in ((item["original_answer"], item["finetuned_answer"]),
                              (item["finetuned_answer"], item["original_answer"])):
            prompts.append(PROMPT.format(question=item["question"], reference=item["reference"], first=first,
                                         second=second))
    return prompts


class RemoteJudge:
    """An OpenAI-compatible chat-completions server (vLLM, llama.cpp, Ollama, TGI…) through huggingface_hub's
    InferenceClient, asked concurrently."""

    def __init__(self, url: str, model: str | None, concurrency: int = 8, timeout: float = 120.0):
        from huggingface_hub import InferenceClient, constants

        if constants.is_offline_mode():  # InferenceClient makes no request at all then, to any server
            raise UserError(f"judge {url}: HF_HUB_OFFLINE=1 is set, and huggingface_hub's InferenceClient (which asks "
                            "the judge) then sends no request to any server: run the judge step without it")

        self.url = url.rstrip("/").removesuffix("/chat/completions")
        self.model = model or "default"
        self.concurrency = concurrency
        token = os.environ.get(TOKEN_ENV) or os.environ.get("OPENAI_API_KEY")
        self.client = InferenceClient(base_url=self.url, api_key=token, timeout=timeout)
        self.name = f"{self.model} @ {url}"

    def _ask(self, prompt: str) -> str:
        from huggingface_hub.errors import HfHubHTTPError

        from ..core.errors import is_network_error

        try:
            reply = self.client.chat_completion(
                [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}],
                model=self.model, max_tokens=200, temperature=0)
        except HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else "?"
            raise UserError(f"judge {self.url}/chat/completions: HTTP {status}") from None
        except Exception as e:  # noqa: BLE001 - a reply that is not a chat completion counts as unparseable
            if is_network_error(e):
                raise UserError(f"judge {self.url}/chat/completions: unreachable ({type(e).__name__})") from None
            return ""
        try:
            return reply.choices[0].message.content or ""
        except (AttributeError, IndexError, TypeError):
            return ""

    def complete(self, prompts: list[str]) -> list[str]:
        if not prompts:
            return []
        first = self._ask(prompts[0])  # fail fast, with one clear error, if the server is not there
        with ThreadPoolExecutor(self.concurrency) as pool:
            return [first, *pool.map(self._ask, prompts[1:])]


def check_local_judge(path: str, trust_remote_code: bool = False) -> None:
    """Before any scoring: a local judge must be a causal LM, which can write a verdict. A masked LM or a
    classifier would only produce replies nobody can parse."""
    from ..inputs.modeling import load_config

    config = load_config(path, trust_remote_code=trust_remote_code)
    architectures = getattr(config, "architectures", None) or []
    if architectures and not any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration"))
                                 for a in architectures):
        raise UserError(f"--judge_model {path}: a {', '.join(architectures)}, not a causal LM; a judge writes its "
                        "verdict, so it needs a generative (chat or instruction) model")


class LocalJudge:
    """A causal LM through transformers' text-generation pipeline: loaded once, greedy, in batches."""

    def __init__(self, path: str, batch_size: int = 8, max_new_tokens: int = 64, use_cpu: bool = False,
                 trust_remote_code: bool = False, use_kernels: bool = False):
        from transformers import pipeline

        from ..inputs.modeling import check_model_path
        from .scoring import pick_device

        check_model_path(path)
        try:
            self.generate = pipeline("text-generation", model=path, device=pick_device(use_cpu),
                                     trust_remote_code=trust_remote_code, model_kwargs={"use_kernels": use_kernels})
        except Exception as e:  # noqa: BLE001 - any way a judge model fails to load is one line
            raise UserError(f"judge model {path}: cannot load as a causal LM: {str(e).splitlines()[0]}") from None
        tokenizer = self.generate.tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.name = path

    def _format(self, prompt: str) -> str:
        tokenizer = self.generate.tokenizer
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(
                [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}],
                tokenize=False, add_generation_prompt=True)
        return f"{SYSTEM_PROMPT}\n\n{prompt}\n\n"

    def complete(self, prompts: list[str]) -> list[str]:
        outputs = self.generate([self._format(p) for p in prompts], batch_size=self.batch_size,
                                max_new_tokens=self.max_new_tokens, do_sample=False, return_full_text=False,
                                pad_token_id=self.generate.tokenizer.pad_token_id)
        return [out[0]["generated_text"] for out in outputs]


def judge_pairs(judge, items: list[dict]) -> tuple[dict, list[dict]]:
    """Ask the judge about every item in both orders; aggregate scores, wins and agreements."""
    replies = judge.complete(build_prompts(items))
    per_item, unparseable = [], 0
    scores = {"original": [], "finetuned": []}
    outcome = {"finetuned_wins": 0, "ties": 0, "original_wins": 0, "undecided": 0}
    orders_agree = orders_compared = 0
    exact_agree = exact_compared = 0
    for k, item in enumerate(items):
        forward, backward = parse_verdict(replies[2 * k]), parse_verdict(replies[2 * k + 1])
        unparseable += (forward is None) + (backward is None)
        winners = []  # in model terms
        if forward:
            scores["original"].append(forward.score_1)
            scores["finetuned"].append(forward.score_2)
            winners.append({"1": "original", "2": "finetuned", "tie": "tie"}[forward.winner])
        if backward:
            scores["finetuned"].append(backward.score_1)
            scores["original"].append(backward.score_2)
            winners.append({"1": "finetuned", "2": "original", "tie": "tie"}[backward.winner])
        if len(winners) == 2:
            orders_compared += 1
            orders_agree += winners[0] == winners[1]
        decided = winners[0] if winners and len(set(winners)) == 1 else ("tie" if len(winners) == 2 else None)
        key = {"finetuned": "finetuned_wins", "original": "original_wins", "tie": "ties", None: "undecided"}[decided]
        outcome[key] += 1
        if decided in ("original", "finetuned") and item["original_correct"] != item["finetuned_correct"]:
            exact_compared += 1
            exact_agree += (decided == "finetuned") == item["finetuned_correct"]
        per_item.append({"id": item["id"], "replies": replies[2 * k: 2 * k + 2], "winner": decided})
    summary = {
        "judge": judge.name,
        "items": len(items),
        "requests": len(replies),
        "unparseable_replies": unparseable,
        "mean_score_original": float(sum(scores["original"]) / len(scores["original"])) if scores["original"] else None,
        "mean_score_finetuned": float(sum(scores["finetuned"]) / len(scores["finetuned"])) if scores["finetuned"] else None,
        **outcome,
        "order_agreement": orders_agree / orders_compared if orders_compared else None,
        "agreement_with_exact_match": exact_agree / exact_compared if exact_compared else None,
        "exact_match_items_compared": exact_compared,
    }
    return summary, per_item
