"""`attn_implementation: varlen` (sft/attention.py): packed samples stay apart, forward and backward, and everything
that is not a packed/unpadded causal pass behaves exactly like SDPA; the stages keep Triton autotuning results."""

from __future__ import annotations

import pytest
import torch

from sft import attention
from sft.common import model_init_kwargs, packing_leak

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("one_thread")]
LENGTHS = (13, 7, 20)


def tiny_llama(attn: str, dtype=torch.float32, device="cpu"):
    from transformers import LlamaConfig, LlamaForCausalLM

    attention.register()
    config = LlamaConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, as in the dense and hybrid models
        max_position_embeddings=256,
        attn_implementation=attn,
        use_cache=False,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device=device, dtype=dtype)


def samples(device="cpu"):
    g = torch.Generator().manual_seed(0)
    return [torch.randint(3, 300, (n,), generator=g).to(device) for n in LENGTHS]


def packed_inputs(seqs):
    """One padding-free row the way TRL's collator builds it: position_ids restart at each sample."""
    return {
        "input_ids": torch.cat(seqs)[None],
        "position_ids": torch.cat([torch.arange(len(s), device=s.device) for s in seqs])[None],
    }


def alone_logits(model, seqs):
    return [model(input_ids=s[None]).logits[0] for s in seqs]


def test_packed_samples_match_each_sample_alone_in_logits_and_gradients():
    varlen, reference = tiny_llama("varlen"), tiny_llama("sdpa")
    seqs = samples()
    packed = varlen(**packed_inputs(seqs)).logits[0]
    alone = alone_logits(reference, seqs)
    torch.testing.assert_close(packed, torch.cat(alone), atol=1e-5, rtol=1e-5)

    packed.logsumexp(-1).sum().backward()
    torch.cat(alone).logsumexp(-1).sum().backward()
    for (name, p), q in zip(varlen.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_sdpa_on_the_same_packed_row_without_resets_leaks_and_varlen_does_not():
    """The property the stage relies on, checked by the stage's own check (packing_leak)."""
    assert packing_leak(tiny_llama("varlen")) is None
    seqs = samples()
    no_resets = {"input_ids": torch.cat(seqs)[None]}  # the same row with nothing marking the boundaries
    together = tiny_llama("varlen")(**no_resets).logits[0, LENGTHS[0] :]
    assert (together[: LENGTHS[1]] - alone_logits(tiny_llama("sdpa"), seqs)[1]).abs().max() > 1e-2


def test_batches_padding_and_a_cache_take_the_sdpa_path_unchanged():
    varlen, reference = tiny_llama("varlen"), tiny_llama("sdpa")
    ids = torch.randint(3, 300, (3, 11), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding
    for kwargs in ({"input_ids": ids}, {"input_ids": ids, "attention_mask": mask}):
        torch.testing.assert_close(varlen(**kwargs).logits, reference(**kwargs).logits, atol=1e-5, rtol=1e-5)
    varlen.config.use_cache = reference.config.use_cache = True
    prompt = ids[:1, :5]
    torch.testing.assert_close(
        varlen.generate(prompt, max_new_tokens=6, do_sample=False),
        reference.generate(prompt, max_new_tokens=6, do_sample=False),
    )


def test_the_stages_pick_varlen_for_padding_free_rows_and_keep_an_explicit_choice():
    from types import SimpleNamespace

    def kwargs(attn=None, **train):
        model_args = SimpleNamespace(model_revision=None, attn_implementation=attn, dtype=None)
        training_args = SimpleNamespace(trust_remote_code=False, model_init_kwargs=None, **train)
        return model_init_kwargs(training_args, model_args)["attn_implementation"]

    assert kwargs(packing=True) == kwargs(padding_free=True) == "varlen"
    assert kwargs(packing=False, padding_free=False) is None  # transformers' default (sdpa)
    assert kwargs("flash_attention_2", packing=True) == "flash_attention_2"


@pytest.mark.gpu
def test_flash_varlen_kernel_matches_sdpa_per_sample_on_the_gpu():
    """The bf16 flash path (torch.ops.aten._flash_attention_forward/backward) against SDPA on each sample alone."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    varlen = tiny_llama("varlen", torch.bfloat16, "cuda")
    reference = tiny_llama("sdpa", torch.bfloat16, "cuda")
    seqs = samples("cuda")
    packed = varlen(**packed_inputs(seqs)).logits[0].float()
    alone = torch.cat(alone_logits(reference, seqs)).float()
    torch.testing.assert_close(packed, alone, atol=5e-2, rtol=5e-2)
    packed.logsumexp(-1).sum().backward()
    alone.logsumexp(-1).sum().backward()
    for p, q in zip(varlen.parameters(), reference.parameters(), strict=True):
        assert (p.grad.float() - q.grad.float()).norm() <= 5e-2 * q.grad.float().norm() + 1e-3
    assert packing_leak(varlen) is None

    # float32 master weights under bf16 autocast (the recipes): rotary upcasts q and k to float32, and the flash
    # path must still be taken (the per-sample SDPA fallback ran 2.5x slower on the dense 1B)
    calls = []
    flash = attention._FlashVarlen.apply
    attention._FlashVarlen.apply = lambda *a: calls.append(a[0].dtype) or flash(*a)
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            tiny_llama("varlen", torch.float32, "cuda")(**packed_inputs(seqs)).logits.sum().backward()
    finally:
        attention._FlashVarlen.apply = flash
    assert calls == [torch.bfloat16] * 2


def test_the_training_stages_keep_triton_autotuning_results_unless_told_otherwise():
    import os
    import subprocess
    import sys

    code = "import sft.common, os; print(os.environ['TRITON_CACHE_AUTOTUNING'])"
    for preset, expected in ((None, "1"), ("0", "0")):
        env = {k: v for k, v in os.environ.items() if k != "TRITON_CACHE_AUTOTUNING"}
        env |= {"TRITON_CACHE_AUTOTUNING": preset} if preset else {}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=100)
        assert out.stdout.strip() == expected, out.stderr[-2000:]
