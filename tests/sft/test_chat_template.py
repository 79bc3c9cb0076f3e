"""The Nemotron Nano 2 chat template: reasoning switch, history stripping, and the assistant-only loss mask."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

ON, OFF = "<think>\n", "<think></think>"  # the generation-prompt prefills for reasoning on / off
ASSISTANT, END = "<SPECIAL_11>Assistant\n", "<SPECIAL_12>"


@pytest.fixture(scope="module")
def tok(tiny_base):
    return AutoTokenizer.from_pretrained(tiny_base)


def prompt(tok, messages):
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def masked_text(tok, messages) -> str:
    out = tok.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    ids = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    return tok.decode(ids)


def user(text):
    return {"role": "user", "content": text}


def system(text):
    return {"role": "system", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


@pytest.mark.parametrize(
    "messages, prefill",
    [
        ([user("What is 2 + 2?")], ON),  # reasoning is on by default
        ([system("/think"), user("What is 2 + 2?")], ON),
        ([system("/no_think"), user("What is 2 + 2?")], OFF),
        ([user("What is 2 + 2? /no_think")], OFF),
        # The last keyword wins, wherever it is.
        ([system("Be brief. /no_think"), user("What is 2 + 2? /think")], ON),
        ([system("/think"), user("What is 2 + 2? /no_think")], OFF),
        ([user("/think Hi /no_think")], OFF),
        # A keyword in an earlier user turn still holds when later turns say nothing.
        ([user("Hi /no_think"), assistant("Hello."), user("What is 2 + 2?")], OFF),
        ([system("/no_think"), user("Hi"), assistant("Hello."), user("Now think. /think")], ON),
        # An assistant message cannot switch the mode; `</think>` is not the `/think` keyword.
        ([user("Hi /no_think"), assistant("<think>\nok</think>/think"), user("again")], OFF),
        ([system("/no_think"), user("What does </think> mean?")], OFF),
    ],
)
def test_generation_prompt_prefill_follows_the_last_keyword(tok, messages, prefill):
    text = prompt(tok, messages)
    assert text.endswith(ASSISTANT + prefill)


def test_keywords_are_removed_from_the_text(tok):
    text = prompt(tok, [system("You are terse. /no_think"), user("/think Add 2 and 3, then explain </think> tags.")])
    assert "/think" not in text.replace("</think>", "") and "/no_think" not in text
    assert "You are terse." in text and "Add 2 and 3, then explain </think> tags." in text


def test_history_keeps_only_answers_and_final_turn_keeps_everything(tok):
    final = "<think>\nFirst 3 + 4 = 7.\n</think>The answer is 7."
    conv = [
        user("What is 1 + 1?"),
        assistant("<think>\nsecret earlier reasoning\n</think>\nIt is 2."),
        user("And 3 + 4?"),
        assistant(final),
    ]
    text = tok.apply_chat_template(conv, tokenize=False)
    assert "secret earlier reasoning" not in text
    assert ASSISTANT + "It is 2." + END in text
    assert text.endswith(ASSISTANT + final + END + "\n")


@pytest.mark.parametrize(
    "conv, expected",
    [
        # Single turn, reasoning on and off: exactly the content plus the end-of-turn token.
        ([user("2 + 3?"), assistant("<think>\n2 + 3 = 5\n</think>5")], "<think>\n2 + 3 = 5\n</think>5" + END),
        ([user("2 + 3? /no_think"), assistant("<think></think>5")], "<think></think>5" + END),
        # Multi-turn: every assistant turn as rendered (history stripped), none of the user/system text.
        (
            [system("Be exact."), user("1 + 1?"), assistant("<think>\nx</think>2"), user("2 + 2?"), assistant("4")],
            "2" + END + "4" + END,
        ),
    ],
)
def test_assistant_mask_is_exactly_the_assistant_content_and_end_of_turn(tok, conv, expected):
    assert masked_text(tok, conv) == expected


def test_final_answer_without_think_block_gets_an_empty_one_outside_the_mask(tok):
    conv = [user("2 + 3?"), assistant("5")]
    assert tok.apply_chat_template(conv, tokenize=False).endswith(ASSISTANT + OFF + "5" + END + "\n")
    assert masked_text(tok, conv) == "5" + END


@pytest.mark.parametrize("flag, completion", [("", "<think>\nadd\n</think>5"), (" /no_think", "<think></think>5")])
def test_prompt_tokens_are_a_prefix_of_prompt_plus_completion(tok, flag, completion):
    """TRL's prompt-completion, DPO and GRPO paths rely on this: the completion only appends tokens."""
    messages = [user("2 + 3?" + flag)]
    prompt_ids = tok.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    full_ids = tok.apply_chat_template([*messages, assistant(completion)])["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids


def test_unknown_role_fails_with_a_message(tok):
    with pytest.raises(Exception, match="unsupported role 'ipython'"):  # `tool` is a role since tool calling
        tok.apply_chat_template([user("hi"), {"role": "ipython", "content": "x"}], tokenize=False)


def test_trl_accepts_the_template(tok):
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    assert has_generation_markers(tok.chat_template)
    assert is_chat_template_stop_token_trained(tok)  # TRL's own check that the model learns to stop


def test_sft_trainer_assistant_only_loss_smoke(tiny_base, tmp_path):
    """Two SFTTrainer steps with assistant_only_loss=True: only assistant tokens carry labels, and weights move."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    rows = [
        {"messages": [user(f"What is {i} + {i}?"), assistant(f"<think>\n{i} + {i} = {2 * i}\n</think>{2 * i}")]}
        for i in range(8)
    ]
    args = SFTConfig(
        output_dir=str(tmp_path),
        assistant_only_loss=True,
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        # TRL defaults to bf16 autocast; on CPU that makes the Mamba depthwise conv1d ~25x slower (torch 2.13).
        bf16=False,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)

    row = trainer.train_dataset[0]
    trained = [label for label in row["labels"] if label != -100]  # TRL turns the assistant mask into labels
    assert tokenizer.decode(trained) == rows[0]["messages"][1]["content"] + END

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert any("mixer.in_proj" in n for n in changed) and any("mixer.q_proj" in n for n in changed)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "description": "Local time.", "parameters": {}}}


def call(name, arguments):
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


TOOL_CHAT = [
    system("Be helpful. /no_think"),
    user("Weather and time in Paris?"),
    {"role": "assistant", "content": "", "tool_calls": [call("get_weather", {"city": "Paris"}), call("get_time", {})]},
    {"role": "tool", "content": '{"temp_c": 18}'},
    {"role": "tool", "content": '"14:05"'},
    assistant("18 C and 14:05 in Paris."),
]


def between(text: str, start: str, end: str) -> list:
    """Every JSON payload between `start` and `end` markers in `text`."""
    import json

    return [json.loads(chunk.split(end)[0]) for chunk in text.split(start)[1:]]


def test_tool_conversation_round_trips(tok):
    """Render a tool-calling conversation, read tools, calls and results back out of the text: all equal."""
    text = tok.apply_chat_template(TOOL_CHAT, tools=[WEATHER, TIME], tokenize=False)
    assert text.startswith("<SPECIAL_10>System\nBe helpful.\n\nYou can use the following tools")
    assert between(text, "<AVAILABLE_TOOLS>", "</AVAILABLE_TOOLS>") == [[WEATHER["function"], TIME["function"]]]
    turns = text.split("<SPECIAL_11>", 1)[1]  # after the system turn and its format examples
    [calls] = between(turns, "<TOOLCALL>", "</TOOLCALL>")
    assert calls == [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]
    assert between(turns, "<TOOL_RESPONSE>", "</TOOL_RESPONSE>") == [[{"temp_c": 18}, "14:05"]]  # grouped, in order
    assert "<SPECIAL_11>Assistant\n<TOOLCALL>[" in text  # a call-only turn: no text before the calls
    assert "</TOOL_RESPONSE>\n" + ASSISTANT + OFF + "18 C and 14:05 in Paris." + END in text


def test_tool_results_are_a_user_turn_and_the_prompt_stays_a_prefix(tok):
    """After tool results the generation prompt opens the next assistant turn; the completion only appends."""
    prompt_ids = tok.apply_chat_template(TOOL_CHAT[:-1], tools=[WEATHER], add_generation_prompt=True)["input_ids"]
    full_ids = tok.apply_chat_template(TOOL_CHAT, tools=[WEATHER])["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids
    assert tok.decode(prompt_ids).endswith(
        '<SPECIAL_11>User\n<TOOL_RESPONSE>[{"temp_c": 18}, "14:05"]</TOOL_RESPONSE>\n' + ASSISTANT + OFF
    )


def test_string_arguments_are_kept_as_written(tok):
    messages = [
        user("w?"),
        {"role": "assistant", "content": "", "tool_calls": [call("get_weather", '{"city":"Rome"}')]},
    ]
    text = tok.apply_chat_template(messages, tools=[WEATHER], tokenize=False)
    assert '<TOOLCALL>[{"name": "get_weather", "arguments": {"city":"Rome"}}]</TOOLCALL>' in text


def test_loss_covers_the_assistant_calls_only(tok):
    """The assistant mask: calls and the final answer are trained; tool specs, user text and results are not."""
    masked = masked_text_with_tools(tok, TOOL_CHAT, [WEATHER, TIME])
    assert masked == (
        '<TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]'
        "</TOOLCALL>" + END + "18 C and 14:05 in Paris." + END
    )


def masked_text_with_tools(tok, messages, tools) -> str:
    out = tok.apply_chat_template(messages, tools=tools, return_dict=True, return_assistant_tokens_mask=True)
    ids = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    return tok.decode(ids)


def test_sft_trainer_masks_a_tool_calling_set(tiny_base, tmp_path):
    """An SFT set with a `tools` column (JSON text, as Parquet/JSONL hold it): TRL renders the tools through our
    template and its assistant mask covers exactly the calls and answers."""
    import json

    from trl import ModelConfig, SFTConfig

    from sft import train

    data = tmp_path / "tools.jsonl"
    data.write_text(json.dumps({"messages": TOOL_CHAT, "tools": json.dumps([WEATHER, TIME])}) + "\n")
    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        assistant_only_loss=True,
        max_length=2048,
        bf16=False,
        report_to="none",
        max_steps=1,
    )
    script = train.SFTScriptArgs(dataset_name=str(data))
    trainer = train.build_trainer(
        script, args, ModelConfig(model_name_or_path=str(tiny_base), dtype="float32"), tmp_path / "out"
    )
    row = trainer.train_dataset[0]
    trained = tok_decode(tiny_base, [label for label in row["labels"] if label != -100])  # TRL folds the mask in
    assert trained == masked_text_with_tools(AutoTokenizer.from_pretrained(tiny_base), TOOL_CHAT, [WEATHER, TIME])
    assert "<TOOLCALL>" in trained and "TOOL_RESPONSE" not in trained and "AVAILABLE_TOOLS" not in trained


def tok_decode(base, ids) -> str:
    return AutoTokenizer.from_pretrained(base).decode(ids)
