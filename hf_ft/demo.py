"""Offline demo assets built by the project itself: a learnable synthetic TMMLU+-layout data set and a
tiny BERT whose WordPiece vocabulary comes from the data's characters — randomly initialised, or
pretrained (masked LM) on a few thousand fact sentences as a stand-in for a pretrained encoder.

The task — "which option belongs to category X?" — needs the model to link a word in the question
to a word in an option, so a 2-layer model learns it in minutes while chance stays at 25%.
"""

from __future__ import annotations

import csv
import random
import tempfile
from pathlib import Path

from .data.rows import LETTERS

# subject → {category name: members}; subjects are real TMMLU+ names so categories and reports work.
DEMO_SUBJECTS: dict[str, dict[str, list[str]]] = {
    "geography_of_taiwan": {
        "臺灣的城市": ["臺北", "臺中", "高雄", "臺南", "新竹", "嘉義", "基隆", "花蓮", "臺東", "宜蘭", "屏東", "桃園"],
        "臺灣的山": ["玉山", "雪山", "合歡山", "阿里山", "大霸尖山", "秀姑巒山", "南湖大山", "奇萊山"],
    },
    "music": {
        "樂器": ["鋼琴", "小提琴", "吉他", "長笛", "二胡", "琵琶", "古箏", "小號", "大提琴", "薩克斯風", "豎琴", "單簧管"],
    },
    "agriculture": {
        "水果": ["蘋果", "香蕉", "芒果", "鳳梨", "西瓜", "葡萄", "荔枝", "木瓜", "芭樂", "橘子", "蓮霧", "釋迦"],
        "蔬菜": ["高麗菜", "菠菜", "青椒", "茄子", "胡蘿蔔", "洋蔥", "空心菜", "花椰菜", "南瓜", "小黃瓜", "地瓜葉"],
    },
    "physical_education": {
        "球類運動": ["籃球", "足球", "棒球", "羽球", "桌球", "網球", "排球", "壘球", "手球", "躲避球"],
    },
    "veterinary_pathology": {
        "哺乳類動物": ["老虎", "獅子", "大象", "熊貓", "長頸鹿", "斑馬", "猴子", "袋鼠", "海豚", "鯨魚", "蝙蝠"],
        "鳥類": ["麻雀", "老鷹", "企鵝", "鴿子", "燕子", "孔雀", "鸚鵡", "貓頭鷹", "白鷺鷥", "藍鵲"],
    },
    "basic_medical_science": {
        "人體器官": ["心臟", "肝臟", "肺臟", "腎臟", "胃", "大腸", "小腸", "胰臟", "膽囊", "脾臟"],
    },
    "advance_chemistry": {
        "化學元素": ["氫", "氦", "鋰", "碳", "氮", "氧", "鈉", "鎂", "鋁", "硫", "氯", "鐵", "銅", "鋅"],
    },
    "introduction_to_law": {
        "法律": ["民法", "刑法", "憲法", "行政程序法", "公司法", "勞動基準法", "著作權法", "消費者保護法"],
    },
}
TEMPLATES = [
    "下列何者屬於{c}？",
    "以下哪一個是{c}？",
    "下列選項中，何者為{c}的一種？",
    "請問下列哪一項可以歸類為{c}？",
    "{p}依據上文，下列何者屬於{c}？",
]
FILLER = "本題節錄自歷屆考試題本內容涵蓋多個領域請考生仔細閱讀題目後作答並注意時間分配與答題技巧"


def _all_members() -> dict[str, str]:
    return {m: c for cats in DEMO_SUBJECTS.values() for c, members in cats.items() for m in members}


ARTIFACTS = ("longest", "negation")
NEGATION_TEMPLATES = ["下列何者不屬於{c}？", "以下哪一個不是{c}？"]
PADDING = "等類"  # what makes a planted gold option the longest: meaningless, but it gives the answer away


def make_question(rng: random.Random, subject: str, artifact: str | None = None) -> dict:
    category = rng.choice(sorted(DEMO_SUBJECTS[subject]))
    member_of = _all_members()
    if artifact == "negation":  # three members and one outsider; the outsider is the answer
        members = rng.sample(DEMO_SUBJECTS[subject][category], 3)
        outsider = rng.choice(sorted(m for m, c in member_of.items() if c != category))
        position = rng.randrange(4)
        options = members[:position] + [outsider] + members[position:]
        question = rng.choice(NEGATION_TEMPLATES).format(c=f"「{category}」")
        return {"question": question, **dict(zip(LETTERS, options)), "answer": LETTERS[position]}
    correct = rng.choice(DEMO_SUBJECTS[subject][category])
    distractors = rng.sample(sorted(m for m, c in member_of.items() if c != category), 3)
    if artifact == "longest":  # the gold option becomes strictly the longest
        longest = max(len(d) for d in distractors)
        correct += "".join(PADDING[i % len(PADDING)] for i in range(max(1, longest - len(correct) + 1)))
    options = distractors[:]
    position = rng.randrange(4)
    options.insert(position, correct)
    passage = "".join(rng.choice(FILLER) for _ in range(rng.randint(10, 60))) + "。"
    question = rng.choice(TEMPLATES).format(c=f"「{category}」", p=passage)
    return {"question": question, **dict(zip(LETTERS, options)), "answer": LETTERS[position]}


def write_subject(out: Path, subject: str, rows: list[dict]) -> list[str]:
    """`<subject>_{dev,val,test}.csv` in the TMMLU+ layout: 5 dev rows, then 70% val, 30% test. Returns each
    row's item id as hf_ft reads it (`<file stem>-<line>`)."""
    n_test = int(round((len(rows) - 5) * 0.3))
    parts = {"dev": rows[:5], "val": rows[5:len(rows) - n_test], "test": rows[len(rows) - n_test:]}
    ids = []
    for split, part in parts.items():
        with open(out / f"{subject}_{split}.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["question", *LETTERS, "answer"])
            writer.writeheader()
            writer.writerows(part)
        ids += [f"{subject}_{split}-{line}" for line in range(2, 2 + len(part))]  # line 1 is the header
    return ids


def make_demo_data(out_dir: str | Path, rows_per_subject: int = 160, seed: int = 0,
                   subjects: list[str] | None = None, artifact: str | None = None,
                   artifact_subjects: list[str] = (), artifact_rate: float = 0.9) -> Path:
    """Write `<subject>_{dev,val,test}.csv` (5 dev rows, then 70% val, 30% test) in the TMMLU+ layout.
    With `artifact="longest"`, in `artifact_subjects` the gold option is made the longest in
    `artifact_rate` of the items: a planted shortcut the evaluate module's audit must find. With
    `artifact="negation"`, that share of their *test* items asks which option does not belong (下列何者不屬於):
    a question form training never shows, which evaluate's per-form table must find the model failing."""
    from .core.errors import UserError

    unknown = [s for s in [*(subjects or []), *(artifact_subjects if artifact else [])] if s not in DEMO_SUBJECTS]
    if unknown:
        raise UserError(f"--artifact-subjects: {', '.join(unknown)} not among the demo subjects "
                        f"({', '.join(sorted(DEMO_SUBJECTS))})")
    if not 0 <= artifact_rate <= 1:
        raise UserError(f"--artifact-rate {artifact_rate}: need a share in [0, 1]")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for subject in subjects or sorted(DEMO_SUBJECTS):
        planted = artifact if subject in artifact_subjects else None
        first_test = rows_per_subject - int(round((rows_per_subject - 5) * 0.3))  # as write_subject splits
        rows = [make_question(rng, subject, planted if planted and rng.random() < artifact_rate
                              and (planted != "negation" or i >= first_test) else None)
                for i in range(rows_per_subject)]
        write_subject(out, subject, rows)
    return out


FACT_TEMPLATES = ["{m}屬於{c}。", "{m}是一種{c}。", "常見的{c}有{m}。", "{c}的例子：{m}。", "「{m}」可以歸類為「{c}」。"]


def fact_sentences(n: int, seed: int = 5) -> list[str]:
    """A tiny "pretraining corpus": sentences that state which category each demo item belongs to."""
    rng = random.Random(seed)
    pairs = sorted(_all_members().items())
    return [rng.choice(FACT_TEMPLATES).format(m=m, c=c) for m, c in (rng.choice(pairs) for _ in range(n))]


# The open-book demo: facts about invented names, so no model can know them, and questions only the facts answer.
OPEN_BOOK_RELATIONS = {
    "geography_of_taiwan": ("所在的城市", "臺灣的城市"),
    "music": ("最擅長的樂器", "樂器"),
    "agriculture": ("主要種植的水果", "水果"),
    "veterinary_pathology": ("飼養的動物", "哺乳類動物"),
}
NAME_CHARS = "甲乙丙丁戊己庚辛壬癸子丑寅卯辰巳午未申酉戌亥金木水火土日月星雲風雷雨雪霜山川河海林森"
NAME_KINDS = ("村", "社", "團", "莊", "號", "館", "坊", "園")


def make_open_book_data(out_dir: str | Path, rows_per_subject: int = 200, seed: int = 0) -> tuple[Path, Path]:
    """`<out>/data` (TMMLU+ layout) and `<out>/corpus/facts.jsonl` (id, title, text): one fact per question,
    "<name>的<relation>是<value>。", about an invented name. Closed book the gold option is a uniform draw
    among four values of the same kind, so chance is 25% and nothing in the question can beat it; open book
    the fact that names the question's entity says which option is right. `<out>/gold_passages.jsonl` says
    which fact supports which item, for evaluate's `--gold_passages` (recall@k)."""
    rng = random.Random(seed)
    out = Path(out_dir)
    data, corpus = out / "data", out / "corpus"
    data.mkdir(parents=True, exist_ok=True)
    corpus.mkdir(parents=True, exist_ok=True)
    facts, used, gold = [], set(), []
    for subject, (relation, category) in sorted(OPEN_BOOK_RELATIONS.items()):
        pool = sorted(next(members for cats in DEMO_SUBJECTS.values() for c, members in cats.items() if c == category))
        rows, supports = [], []
        while len(rows) < rows_per_subject:
            name = "".join(rng.choice(NAME_CHARS) for _ in range(3)) + rng.choice(NAME_KINDS)
            if name in used:
                continue
            used.add(name)
            options = rng.sample(pool, 4)
            position = rng.randrange(4)
            facts.append({"id": f"fact-{len(facts)}", "title": name, "text": f"{name}{relation}是{options[position]}。"})
            supports.append(facts[-1]["id"])
            rows.append({"question": f"請問{name}{relation}是下列何者？", **dict(zip(LETTERS, options)),
                         "answer": LETTERS[position]})
        gold += [{"id": item, "passages": [fact]} for item, fact in zip(write_subject(data, subject, rows), supports)]
    rng.shuffle(facts)
    import json

    with open(corpus / "facts.jsonl", "w", encoding="utf-8") as f:
        for fact in facts:
            f.write(json.dumps(fact, ensure_ascii=False) + "\n")
    with open(out / "gold_passages.jsonl", "w", encoding="utf-8") as f:
        for entry in gold:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
    return data, corpus


# Other wordings than TEMPLATES: an extra exam set asks about the same facts, it does not copy the test's questions.
EXTRA_TEMPLATES = ["{c}包括哪一項？", "哪一項算是{c}？", "選出{c}：", "何者是{c}？"]


def make_extra_questions(path: str | Path, n: int = 400, seed: int = 7, subjects: list[str] | None = None,
                         min_options: int = 2, simplified: bool = True, context: bool = True) -> Path:
    """A JSONL exam set in another layout, as a C3-style extra source would bring it: the demo task's
    questions with 2-4 options (`options`, a list), the answer given as the gold option's text, a reading
    passage as `context`, in Simplified script by default. Questions never repeat a demo row's text."""
    import json

    from .retrieval.text import to_simplified

    rng = random.Random(seed)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    chosen = subjects or sorted(DEMO_SUBJECTS)
    with open(out, "w", encoding="utf-8") as f:
        for i in range(n):
            subject = chosen[i % len(chosen)]
            row = make_question(rng, subject)
            category = row["question"].split("「")[-1].split("」")[0]
            row["question"] = rng.choice(EXTRA_TEMPLATES).format(c=f"「{category}」")
            options = [row[letter] for letter in LETTERS]
            gold = options[LETTERS.index(row["answer"])]
            keep = rng.randint(min_options, 4)
            distractors = [o for o in options if o != gold]
            options = rng.sample(distractors, keep - 1) + [gold]
            rng.shuffle(options)
            record = {"id": f"extra-{i}", "subject": subject, "question": row["question"],
                      "options": options, "answer": gold}
            if context:
                record["context"] = "".join(rng.choice(FILLER) for _ in range(rng.randint(20, 60))) + "。"
            if simplified:
                record = {k: (to_simplified(v) if isinstance(v, str) and k not in ("id", "subject") else
                              [to_simplified(o) for o in v] if isinstance(v, list) else v) for k, v in record.items()}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return out


SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _characters(paths: list[str | Path]) -> list[str]:
    chars: set[str] = set()
    for p in paths:
        p = Path(p)
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        for f in files:
            if f.is_file() and f.suffix.lower() in (".csv", ".json", ".jsonl", ".txt"):
                chars.update(f.read_text(encoding="utf-8-sig"))
    ascii_chars = set("abcdefghijklmnopqrstuvwxyz0123456789.,:;!?()[]{}-_+=/%")
    return sorted(c for c in (chars | ascii_chars) if c.strip() and not c.isupper())


def make_tiny_model(out_dir: str | Path, vocab_from: list[str | Path], hidden_size: int = 64,
                    num_layers: int = 2, num_heads: int = 2, intermediate_size: int = 128,
                    max_positions: int = 512, seed: int = 0, dropout: float = 0.1) -> Path:
    """A randomly initialised small BertForMaskedLM + tokenizer (like bert-base-chinese, just tiny)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL_TOKENS + [c for c in _characters(vocab_from) if c not in SPECIAL_TOKENS]
    vocab_file = out / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(vocab_file), model_max_length=max_positions)
    if len(tokenizer) != len(vocab):  # transformers 5 silently ignores some vocab arguments
        raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens, expected {len(vocab)}")
    tokenizer.save_pretrained(out)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=num_heads, intermediate_size=intermediate_size,
                        max_position_embeddings=max_positions, pad_token_id=0,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    model = BertForMaskedLM(config)
    model.save_pretrained(out, safe_serialization=True)
    return out


def pretrain_tiny_model(model_dir: str | Path, sentences: int = 20000, epochs: int = 20, learning_rate: float = 5e-4,
                        batch_size: int = 32, seed: int = 0) -> Path:
    """Masked-LM pretraining of `model_dir` in place on `fact_sentences`, like a (very) small pretrained
    encoder: it then knows which item belongs to which category, but not the exam format. The joint
    formulation needs such knowledge to learn at all; per-choice does not."""
    import datasets
    import torch
    from transformers import AutoTokenizer, BertForMaskedLM, DataCollatorForLanguageModeling, Trainer, TrainingArguments

    model_dir = Path(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = BertForMaskedLM.from_pretrained(model_dir, use_kernels=False)
    corpus = datasets.Dataset.from_dict(tokenizer(fact_sentences(sentences, seed=seed + 5)))
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(output_dir=scratch, num_train_epochs=epochs, per_device_train_batch_size=batch_size,
                                 learning_rate=learning_rate, lr_scheduler_type="constant", weight_decay=0.0,
                                 save_strategy="no", report_to="none", logging_strategy="no", seed=seed,
                                 disable_tqdm=True, use_cpu=not torch.cuda.is_available())
        trainer = Trainer(model=model, args=args, train_dataset=corpus,
                          data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=seed))
        trainer.train()
    model.save_pretrained(model_dir, safe_serialization=True)
    return model_dir
