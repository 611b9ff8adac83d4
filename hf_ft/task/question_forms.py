"""Question forms of Taiwanese exam questions where encoders are known to fail (negation, all/none of the
above: arXiv 2107.02893), as a small registry of documented rules over a row's text. Evaluate reports
accuracy per form for every model, with the paired difference and its interval, so that "41% overall" says
where the errors are. A row may have several forms, or none ("plain").

Each rule reads only the row (and, for the passage forms, whether the model read a retrieved passage): no
model, no randomness, so every report on the same items counts the same forms. Adding a form is one entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..core.registry import Registry

LONG_STEM_CHARS = 120  # a stem this long or longer is "long": about the 90th percentile of TMMLU+ stems


@dataclass(frozen=True)
class QuestionForm:
    name: str
    description: str  # what the reports say the form is
    test: object  # (question, options) -> bool


QUESTION_FORMS: Registry = Registry("question form")
register = QUESTION_FORMS.register


def _compact(text: str) -> str:
    return re.sub(r"\s+", "", text or "")


# Negation in the stem: 何者錯誤 / 不正確 / 有誤 / 不是 / 不屬於 / 何者為非 / 除外 ... (not 非洲, 非常: only the
# negating uses).
_NEGATION = re.compile(r"錯誤|不正確|不適當|不恰當|不合理|不是|不屬於|不包括|不可能|不會|不宜|不符|有誤|為非|何者非|"
                       r"除外|並非|不對|不能")
_ALL_OF_ABOVE = re.compile(r"^(以上)?(皆|都|均|全)(是|對|正確|為是)$|^以上(皆|都|均|全)(是|對|正確)")
_NONE_OF_ABOVE = re.compile(r"^(以上)?(皆|都|均|全)(非|不是|不對|不正確|錯誤|錯)$|^以上(皆|都|均|全)(非|不是|不對|不正確|錯)")
# An option that names a combination of statements: 甲乙 / 甲、丙 / ①③ / (1)(3) / 1、3.
_MARKERS = "甲乙丙丁戊己庚辛①②③④⑤⑥⑦⑧⑨"
_COMBINATION = re.compile(rf"^(?:[{_MARKERS}]|[(（][1-9一二三四五六七八九][)）]|[1-9])(?:[、,，與和及\s]*"
                          rf"(?:[{_MARKERS}]|[(（][1-9一二三四五六七八九][)）]|[1-9])){{1,8}}$")
# A numeric option: a number (fraction, decimal, percent, power) with at most a short unit after it.
_NUMBER = re.compile(r"^[-+−±約]?[0-9０-９]+(?:[.,．/：:][0-9０-９]+)*(?:[%％‰°度倍個元公克斤尺分秒年月日天人次]{0,4}|"
                     r"[a-zA-Zμ²³/]{0,6})$")


register(QuestionForm(
    "negation", "the stem asks for what is wrong or excluded (何者錯誤, 不正確, 不屬於, 除外, ...)",
    lambda question, options: bool(_NEGATION.search(_compact(question)))))
register(QuestionForm(
    "all_of_the_above", "an option is 以上皆是 (all of the above)",
    lambda question, options: any(_ALL_OF_ABOVE.search(_compact(o)) for o in options)))
register(QuestionForm(
    "none_of_the_above", "an option is 以上皆非 (none of the above)",
    lambda question, options: any(_NONE_OF_ABOVE.search(_compact(o)) for o in options)))
register(QuestionForm(
    "combination", "the options are combinations of numbered statements (甲乙, 甲丙, ①③)",
    lambda question, options: sum(bool(_COMBINATION.match(_compact(o))) for o in options) >= 2))
register(QuestionForm(
    "numeric", "every option is a number, perhaps with a unit (a calculation)",
    lambda question, options: all(_NUMBER.match(_compact(o)) for o in options)))
register(QuestionForm(
    "long_stem", f"the stem has {LONG_STEM_CHARS} characters or more",
    lambda question, options: len(_compact(question)) >= LONG_STEM_CHARS))

PASSAGE_FORMS = {True: "with_passage", False: "without_passage"}  # open-book models only
PASSAGE_DESCRIPTIONS = {"with_passage": "the model read at least one retrieved passage",
                        "without_passage": "an open-book model found no passage for it"}


def forms_of(question: str, options, read_a_passage: bool | None = None) -> list[str]:
    """The forms of one question, in registry order; `read_a_passage` (open book) adds with/without_passage."""
    forms = [name for name, form in QUESTION_FORMS.items() if form.test(question, tuple(options))]
    if read_a_passage is not None:
        forms.append(PASSAGE_FORMS[bool(read_a_passage)])
    return forms


def describe(name: str) -> str:
    return PASSAGE_DESCRIPTIONS.get(name) or QUESTION_FORMS[name].description
