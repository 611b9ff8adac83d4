"""The known layouts of Chinese exam sets, registered in one place: a record of the source → candidate questions.

An adapter only says where the question, the options, the answer and any passage are in one record; `to_row`
then does what every source needs: option-letter prefixes stripped, the answer (a letter, an index, a list of
indices or the option's text) mapped to its option, 2–4 distinct non-empty options, and a reason naming the
record otherwise. Adding a layout means one `register(...)` here and its tests.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Callable

from ..core.registry import Registry
from ..data.rows import LETTERS, QARow, normalise_text, option_problem

MAX_OPTIONS = len(LETTERS)  # the 4-way heads hf_ft trains; a 5-option item does not fit them
_LETTER_PREFIX = re.compile(r"^\s*[(（]?\s*[A-Za-zＡ-Ｚａ-ｚ]\s*[)）.．、:：]\s*")
COLUMN_ROLES = ("question", "options", "A", "B", "C", "D", "answer", "context", "subject", "id")


@dataclass
class Candidate:
    """One question as the source holds it, before checking."""

    question: object
    options: object
    answer: object  # a letter, a 0-based index, a list of indices, or the text of the correct option
    context: object = None
    key: str = ""  # what makes its id unique inside the file (a document's question number)
    subject: str | None = None


class Unusable(Exception):
    """The reason a candidate cannot be a training question (kind, reason)."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


class MultipleAnswers(Unusable):
    """Several correct options: not a 1-of-n question, dropped and counted (not an input error)."""


@dataclass(frozen=True)
class Adapter:
    name: str
    help: str
    candidates: Callable[[dict, dict], list[Candidate]]  # (record, column map) → candidates
    columns: tuple[str, ...]  # every record must have these
    reader: str = "parquet"  # on the hub: parquet (its configs) or zip_csv (CMMLU's zip); local files are read alike
    splits: tuple[str, ...] = ()  # default splits (empty: every split)
    exclude: tuple[str, ...] = ()  # default excluded subjects (fnmatch patterns)
    unlabelled_splits: tuple[str, ...] = ()
    unlabelled_why: str = ""
    repos: tuple[str, ...] = ()  # hub ids it is the default for (fnmatch patterns, lower case)
    script: str = "simplified"  # the script of the known data; `convert=auto` still checks the text itself


ADAPTERS: Registry[Adapter] = Registry("extra-source adapter", "adapter=")
register = ADAPTERS.register


def adapter_for(repo: str) -> str | None:
    name = repo.strip().lower()
    for adapter in ADAPTERS.values():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in adapter.repos):
            return adapter.name
    return None


def wanted(subject: str, only: tuple[str, ...], excluded: tuple[str, ...]) -> bool:
    if only and not any(fnmatch.fnmatchcase(subject, p) for p in only):
        return False
    return not any(fnmatch.fnmatchcase(subject, p) for p in excluded)


# ----------------------------------------------------------------------------------------------
# From a candidate to a row


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "\n".join(_text(v) for v in value)
    return str(value).strip()


def strip_letter(option: str) -> str:
    """`(A)鯨魚`, `A. 鯨魚`, `Ａ、鯨魚` → `鯨魚` (AGIEval's choices carry their letters)."""
    return _LETTER_PREFIX.sub("", option, count=1).strip()


def answer_index(answer, options: list[str]) -> int:
    """The option the answer names: a letter, a 0-based index, a one-element list of indices, or its text."""
    if isinstance(answer, (list, tuple)):
        if len(answer) > 1:
            raise MultipleAnswers("multiple_answers", f"{len(answer)} correct options ({answer})")
        if not answer:
            raise Unusable("bad_answer", "no answer")
        answer = answer[0]
    if isinstance(answer, bool):
        raise Unusable("bad_answer", f"answer {answer!r} is not an option")
    if isinstance(answer, int) or (isinstance(answer, float) and answer.is_integer()):
        index = int(answer)
        if 0 <= index < len(options):
            return index
        raise Unusable("bad_answer", f"answer index {index} is outside the {len(options)} options (0-based)")
    text = _text(answer)
    if not text:
        raise Unusable("bad_answer", "empty answer")
    letter = normalise_text(text).upper()
    if len(letter) == 1 and "A" <= letter <= "Z":
        index = ord(letter) - ord("A")
        if index < len(options):
            return index
        raise Unusable("bad_answer", f"answer '{text}' is not one of {', '.join(LETTERS[:len(options)])}")
    matches = [i for i, option in enumerate(options) if normalise_text(option) == normalise_text(text)]
    if len(matches) == 1:
        return matches[0]
    raise Unusable("bad_answer", f"answer '{text[:40]}' is not one of the options")


def to_row(candidate: Candidate, row_id: str, subject: str, source: str, line) -> QARow:
    """A checked training row; `Unusable` (with its kind) when the candidate cannot be one."""
    if isinstance(candidate.question, (dict, list)):
        raise Unusable("not_text", "the question is not text")
    question = _text(candidate.question)
    if not normalise_text(question):
        raise Unusable("empty_question", "empty question")
    raw = candidate.options
    if not isinstance(raw, (list, tuple)):
        raise Unusable("not_text", f"the options are not a list (a {type(raw).__name__})")
    if any(isinstance(o, (dict, list)) for o in raw):
        raise Unusable("not_text", "an option is not text")
    options = [strip_letter(_text(o)) for o in raw]
    if len(options) < 2:
        raise Unusable("too_few_options", f"{len(options)} option(s); a question needs 2 or more")
    if len(options) > MAX_OPTIONS:
        raise Unusable("too_many_options", f"{len(options)} options; hf_ft trains on questions of 2 to "
                                           f"{MAX_OPTIONS}")
    problem = option_problem(options, LETTERS[:len(options)])
    if problem:
        raise Unusable(*problem)
    index = answer_index(candidate.answer, options)
    context = _text(candidate.context) or None
    return QARow(row_id, subject, question, tuple(options), LETTERS[index], source, line, context)


# ----------------------------------------------------------------------------------------------
# The layouts


def _lettered(record: dict, columns: dict) -> list[Candidate]:
    beyond = [k for k in record if isinstance(k, str) and len(k.strip()) == 1 and "E" <= k.strip().upper() <= "Z"
              and str(record[k] or "").strip()]
    if beyond:  # an option the layout has no slot for would be dropped without a word
        raise ValueError(f"option column(s) {', '.join(beyond)} beyond A-D: the layout has four options")
    return [Candidate(record.get("question"), [record.get(letter) for letter in LETTERS], record.get("answer"))]


register(Adapter(
    "ceval", "C-Eval (ceval/ceval-exam and its Traditional copy): id, question, A-D, answer letter, explanation",
    _lettered, ("question", "A", "B", "C", "D", "answer"), splits=("val", "dev"),
    exclude=("mao_zedong_thought", "marxism", "ideological_and_moral_cultivation", "*_politics",
             "modern_chinese_history"),
    unlabelled_splits=("test",), unlabelled_why="C-Eval's test answers are not released; use splits=val,dev",
    repos=("ceval/ceval-exam", "*/ceval-exam*")))


def _cmmlu(record: dict, columns: dict) -> list[Candidate]:
    return [Candidate(record.get("Question"), [record.get(letter) for letter in LETTERS], record.get("Answer"))]


register(Adapter(
    "cmmlu", "CMMLU (haonan-li/cmmlu): a loading-script repo; its zip's dev/ and test/<subject>.csv are read",
    _cmmlu, ("Question", "A", "B", "C", "D", "Answer"), reader="zip_csv", splits=("dev", "test"),
    exclude=("chinese_*", "marxist_theory", "legal_and_moral_basis"), repos=("haonan-li/cmmlu", "*/cmmlu")))


def _as_list_of_dicts(questions) -> list[dict]:
    """C3's `questions`: a dict of lists as `datasets` writes a sequence of dicts, or a list of dicts."""
    if isinstance(questions, dict):
        keys = list(questions)
        n = len(questions[keys[0]]) if keys else 0
        return [{k: questions[k][i] for k in keys} for i in range(n)]
    return list(questions or [])


def _c3(record: dict, columns: dict) -> list[Candidate]:
    return [Candidate(q.get("question"), q.get("choice"), _text(q.get("answer")), record.get("documents"),
                      key=str(i)) for i, q in enumerate(_as_list_of_dicts(record.get("questions")))]


register(Adapter(
    "c3", "C3 per document (dataset-org/c3): documents, questions {question, answer text, choice}; 2-4 options, "
    "the document is the context", _c3, ("documents", "questions"), splits=("train", "validation"),
    repos=("dataset-org/c3", "c3")))


def _clue_c3(record: dict, columns: dict) -> list[Candidate]:
    return [Candidate(record.get("question"), record.get("choice"), _text(record.get("answer")),
                      record.get("context"))]


register(Adapter(
    "clue_c3", "C3 in CLUE (clue/clue config c3): one question per row, answer text, the passage as context",
    _clue_c3, ("context", "question", "choice", "answer"), splits=("train", "validation"),
    unlabelled_splits=("test",), unlabelled_why="CLUE withholds its test answers; use splits=train,validation",
    repos=("clue/clue",)))

_AGIEVAL_QUESTION = re.compile(r"^\s*(问题|問題)[：:]\s*")
_AGIEVAL_TAIL = re.compile(r"\s*(选项|選項)[：:].*$", re.S)


def _agieval(record: dict, columns: dict) -> list[Candidate]:
    """`query` holds the prompt: 问题：… 选项：(A)…(B)… 答案：…; the question is what precedes 选项."""
    query = _AGIEVAL_TAIL.sub("", _AGIEVAL_QUESTION.sub("", _text(record.get("query"))))
    return [Candidate(query, record.get("choices"), record.get("gold"))]


register(Adapter(
    "agieval", "AGIEval's Chinese tasks (hails/agieval-<task>): query, choices '(A)…', gold = list of indices",
    _agieval, ("query", "choices", "gold"), repos=("hails/agieval-*",)))


def _columns(record: dict, columns: dict) -> list[Candidate]:
    role = {r: columns.get(r, r) for r in COLUMN_ROLES}
    if "options" in columns or (role["options"] in record and not all(role[c] in record for c in LETTERS)):
        options = record.get(role["options"])
    else:
        options = [record.get(role[c]) for c in LETTERS if role[c] in record]
    return [Candidate(record.get(role["question"]), options, record.get(role["answer"]), record.get(role["context"]),
                      subject=_text(record.get(role["subject"])) or None)]


register(Adapter(
    "columns", "any table: question, options (a list column, or A-D columns), answer (letter, index or text), "
    "optional context and subject; columns=role:column renames them", _columns, ("question", "answer"),
    script="unknown"))


def required_columns(adapter: Adapter, columns: dict) -> tuple[str, ...]:
    if adapter.name != "columns":
        return adapter.columns
    return tuple(columns.get(r, r) for r in ("question", "answer"))
