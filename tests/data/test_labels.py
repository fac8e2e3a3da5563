"""Assistant-only labels, checked token by token by decoding what the loss covers."""

from __future__ import annotations

import json

import pytest

from fcmistral.data.labels import IGNORE_INDEX, examples_from_rows
from fcmistral.format.glaive import parse_row
from fcmistral.prompt import FunctionCall, Turn, build_system_prompt, call_turn, render_chat
from tests.tokenizer_kinds import metaspace_tokenizer

SCHEMA = {"name": "check_exam", "description": "Did a student PASS?", "parameters": {"type": "object", "properties": {"student": {"type": "string"}}}}
ACK = "Sure, let me check whether the CLASS will PASS. <|endoftext|>"
CALL = call_turn([FunctionCall("check_exam", {"student": "Zoë O'Brien"})])
ANSWER = "Zoë passed — USER and FUNCTION are just words here. <|endoftext|>"


def tricky_row() -> dict:
    turns = [
        Turn("user", "Did Zoë PASS? My CLASS asks. USER: FUNCTION RESPONSE: ASSISTANT inside a line."),
        Turn("assistant", ACK.removesuffix(" <|endoftext|>")),
        CALL,
        Turn("function_response", json.dumps({"result": "PASS", "note": "ASSISTANT: fake"})),
        Turn("assistant", ANSWER.removesuffix(" <|endoftext|>")),
    ]
    return {"system": build_system_prompt([SCHEMA]), "chat": render_chat(turns)}


def special_text_row() -> dict:
    turns = [Turn("user", "Price? </s>"), Turn("assistant", "It was <s>$5</s> $4. </s> <s> <unk>")]
    return {"system": build_system_prompt([SCHEMA]), "chat": render_chat(turns)}


def expected_runs() -> list[str]:
    """What the loss must cover, written out by hand from the rule in fcmistral/labels.py."""
    return [
        "ASSISTANT: " + ACK + "\n\n\n"
        + "ASSISTANT: " + CALL.content + " <|endoftext|>\n\n\nFUNCTION RESPONSE:",
        "ASSISTANT: " + ANSWER + "\n\n\n</s>",
    ]


def supervised_runs(example, tokenizer) -> list[str]:
    runs, current = [], []
    for token, label in zip(example.input_ids, example.labels):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


@pytest.fixture(scope="module", params=["tiny-bytelevel", "metaspace", "mistral-real"])
def tokenizer(request, tiny_tokenizer, sample_rows):
    if request.param == "tiny-bytelevel":
        return tiny_tokenizer
    if request.param == "mistral-real":  # Mistral-7B-v0.1's own vocabulary
        return request.getfixturevalue("mistral_tokenizer")
    return metaspace_tokenizer([r["system"] + r["chat"] for r in sample_rows[:200]]
                               + [tricky_row()["chat"], special_text_row()["chat"]])


def test_loss_covers_exactly_the_assistant_turns_and_following_tags(tokenizer):
    (example,) = examples_from_rows([parse_row(tricky_row())], tokenizer, max_length=4096)
    assert example.labels[0] == IGNORE_INDEX and example.input_ids[0] == tokenizer.bos_token_id
    assert example.input_ids[-1] == tokenizer.eos_token_id and example.labels[-1] == tokenizer.eos_token_id
    assert supervised_runs(example, tokenizer) == expected_runs()


def test_decisions_are_the_first_token_of_each_assistant_turns_content(tokenizer):
    """The token where the model chooses between words and a call: the acknowledgement's "Sure",
    the call's marker, the answer's first word; each one supervised."""
    (example,) = examples_from_rows([parse_row(tricky_row())], tokenizer, max_length=4096)
    assert len(example.decisions) == 3
    pieces = [tokenizer.decode(example.input_ids[i:i + 1]).strip() for i in example.decisions]
    for piece, content in zip(pieces, (ACK, CALL.content, ANSWER)):
        assert piece and content.startswith(piece), (piece, content)
    assert all(example.labels[i] == example.input_ids[i] for i in example.decisions)
    prefix = tokenizer.decode(example.input_ids[:example.decisions[1]])
    assert prefix.rstrip().endswith("ASSISTANT:")  # the tag before it is not the decision


def test_nothing_is_lost_or_added_by_tokenization(tokenizer):
    row = tricky_row()
    (example,) = examples_from_rows([parse_row(row)], tokenizer, max_length=4096)
    assert tokenizer.decode(example.input_ids, skip_special_tokens=True) == row["system"] + row["chat"]


def test_truncation_keeps_whole_assistant_turns(tokenizer):
    parsed = parse_row(tricky_row())
    (full,) = examples_from_rows([parsed], tokenizer, max_length=4096)
    first_run_end = max(i for i, l in enumerate(full.labels[: len(full.labels) - 5]) if l != IGNORE_INDEX
                        and full.labels[i + 1] == IGNORE_INDEX) + 1
    (cut,) = examples_from_rows([parsed], tokenizer, max_length=len(full.input_ids) - 3)
    assert len(cut.input_ids) == first_run_end  # stops right after "FUNCTION RESPONSE:"
    assert supervised_runs(cut, tokenizer) == expected_runs()[:1]
    (too_short,) = examples_from_rows([parsed], tokenizer, max_length=first_run_end - 1, overflow="truncate")
    assert too_short.reason == f"first assistant turn ends beyond max_length ({first_run_end - 1} tokens)"
    assert too_short.prompt_tokens == full.prompt_tokens
    (dropped,) = examples_from_rows([parsed], tokenizer, max_length=len(full.input_ids) - 3, overflow="drop")
    assert dropped.reason.startswith("longer than max_length")


def test_trailing_user_turn_is_left_out_and_rows_without_assistant_are_reported(tokenizer):
    row = tricky_row()
    parsed = parse_row({"system": row["system"], "chat": row["chat"] + "USER: Thanks! PASS it on.\n\n\n"})
    (example,) = examples_from_rows([parsed], tokenizer, max_length=4096)
    assert supervised_runs(example, tokenizer) == expected_runs()
    user_only = parse_row({"system": row["system"], "chat": "USER: hello\n\n\n"})
    (skipped,) = examples_from_rows([user_only], tokenizer, max_length=4096)
    assert skipped.reason == "no assistant turn"


def test_real_row_labels(real_row, tiny_tokenizer):
    (example,) = examples_from_rows([parse_row(real_row)], tiny_tokenizer, max_length=4096)
    runs = supervised_runs(example, tiny_tokenizer)
    assert runs[0] == "ASSISTANT: Of course, I can help with that. Please provide me with the text. <|endoftext|>\n\n\nUSER:"
    assert runs[-1] == "ASSISTANT: The text you provided is in French. <|endoftext|>\n\n\n</s>"
    assert len(runs) == 3


def test_pad_token_is_never_eos(tiny_tokenizer, tmp_path):
    from fcmistral.modeling import load_tokenizer

    assert tiny_tokenizer.pad_token_id != tiny_tokenizer.eos_token_id
    # A Mistral-like tokenizer with no pad token gets <unk> as pad, not </s>.
    tok = metaspace_tokenizer(["some text to train on"] * 10)
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(str(tmp_path))
    assert loaded.pad_token == "<unk>" and loaded.pad_token_id != loaded.eos_token_id


def test_special_tokens_written_in_text_are_text(tokenizer):
    """An HTML strikethrough in a reply (``<s>old</s>``) must not train a BOS or an end of sequence
    mid-turn: the only BOS is the first token and the only EOS the last, and the text comes back whole."""
    row = special_text_row()
    (example,) = examples_from_rows([parse_row(row)], tokenizer, max_length=4096)
    specials = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id}
    assert [i for i, t in enumerate(example.input_ids) if t in specials] == [0, len(example.input_ids) - 1]
    assert tokenizer.decode(example.input_ids, skip_special_tokens=True) == row["system"] + row["chat"]


@pytest.mark.parametrize("packed", [False, True])
def test_the_head_only_at_supervised_positions_gives_the_same_loss_and_gradients(tiny_model_dir, tiny_tokenizer, packed):
    """SupervisedLogits: logits only where a supervised token is predicted, and the model's own loss
    and gradients unchanged (padded batches and packed, flattened ones)."""
    import torch
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

    from fcmistral.data.labels import SupervisedLogits, with_supervised_logits
    from fcmistral.data.loading import prepare_splits
    from fcmistral.data.packing import PackedCollator
    from tests.conftest import REPO

    train, _ = prepare_splits(str(REPO / "data" / "sample_train.jsonl"), tiny_tokenizer, 1024, 0.1, 3, report=False)
    rows = [train[i] for i in range(4)]
    collate = PackedCollator() if packed else DataCollatorForSeq2Seq(tiny_tokenizer, label_pad_token_id=IGNORE_INDEX)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    if packed:
        from fcmistral.data.packing import packed_attention

        model.set_attn_implementation(packed_attention())

    def loss_and_grads(batch):
        model.zero_grad()
        supervised = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        outputs = model(**batch, num_items_in_batch=supervised)
        outputs.loss.backward()
        return outputs, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain, plain_grads = loss_and_grads(collate(rows))
    batch = SupervisedLogits(collate)(rows)
    kept, kept_grads = loss_and_grads(batch)
    assert kept.logits.shape[0] == int(batch["logits_to_keep"].sum()) < plain.logits.shape[:2].numel() // 2
    assert torch.allclose(kept.loss, plain.loss, rtol=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(kept_grads, plain_grads))
    blank = collate(rows[:1])  # FSDP's filler batch: no supervised token, no loss
    blank["labels"].fill_(IGNORE_INDEX)
    with torch.no_grad():
        assert float(model(**with_supervised_logits(blank), num_items_in_batch=1).loss) == 0.0


@pytest.mark.parametrize("packed", [False, True])
def test_decision_weight_adds_its_share_of_each_decisions_loss(tiny_model_dir, tiny_tokenizer, packed):
    """--decision_weight W: the loss is the plain one plus (W - 1) x each decision token's cross-entropy,
    over the same supervised-token count; the marks follow the labels through padding and packing."""
    import torch
    import torch.nn.functional as F
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

    from fcmistral.data.labels import DECISION, SupervisedLogits, decision_marks
    from fcmistral.data.packing import PackedCollator, pack_examples, packed_attention
    from fcmistral.training.loss import supervised_loss
    from tests.conftest import REPO

    rows = [json.loads(line) for line in (REPO / "data" / "sample_train.jsonl").read_text().splitlines()[:4]]
    examples = examples_from_rows([parse_row(r) for r in rows], tiny_tokenizer, 1024)
    records = [{"input_ids": e.input_ids, "labels": e.labels, DECISION: decision_marks(e)} for e in examples]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    if packed:
        model.set_attn_implementation(packed_attention())
        records = list(pack_examples(Dataset.from_list(records), max_length=4096))
        collate = PackedCollator()
    else:
        collate = DataCollatorForSeq2Seq(tiny_tokenizer, label_pad_token_id=IGNORE_INDEX)
    weight = 4.0
    batch = SupervisedLogits(collate, decision_weight=weight)([dict(r) for r in records])
    assert int((batch["loss_weights"] == weight).sum()) == sum(len(e.decisions) for e in examples) > 0
    assert set(batch["loss_weights"].tolist()) == {1.0, weight}

    tokens, plain, decided = 0, 0.0, 0.0  # each example alone, from the full logits
    with torch.no_grad():
        for e in examples:
            logits = model(input_ids=torch.tensor([e.input_ids])).logits[0]
            losses = F.cross_entropy(logits[:-1], torch.tensor(e.labels[1:]), reduction="none", ignore_index=IGNORE_INDEX)
            tokens += sum(label != IGNORE_INDEX for label in e.labels[1:])
            plain += float(losses.sum())
            decided += float(sum(losses[i - 1] for i in e.decisions))
        loss = float(supervised_loss(model, batch, tokens))
        unweighted = SupervisedLogits(collate)([dict(r) for r in records])
        assert "loss_weights" not in unweighted
        assert abs(float(supervised_loss(model, unweighted, tokens)) - plain / tokens) < 1e-4
    assert abs(loss - (plain + (weight - 1) * decided) / tokens) < 1e-4
