"""Tiny, randomly initialised diffusers video pipelines built offline from the REAL diffusers/transformers classes.

``build_tiny_pipeline(layout, out, seed)`` constructs one of five text-to-video pipelines with tiny configs, saves it
with ``pipe.save_pretrained(out)`` and returns ``out``; it reloads fully offline with
``DiffusionPipeline.from_pretrained(out)`` (or the specific class).  Tokenizers are the real ``transformers`` classes
(v5: backed by ``tokenizers``) built from a small hand-made vocabulary (lowercase words incl. every word of the
MovingDigits captions ``a {colour} {digit} moving {direction}``, letters, digits, punctuation, the model's special
tokens); unknown lowercase words fall back to letters (CLIP lowercases; T5 has no uppercase pieces: <unk>).  Weights
depend only on ``seed``.  ``call_kwargs(layout)`` gives the arguments a test should pass to ``pipe(...)``; ``SPECS``
holds the same facts as data.

Sizes common to all layouts: 9 frames at 32x32 pixels (16x16 is the smallest size all four accept, checked in
tests/test_tiny_pipelines.py; unet3d also takes 8x8); VAEs compress 8x spatially (4 blocks; the three video VAEs also
4x in time, so 9 frames -> 3 latent frames); text encoders have hidden size 16-32, 2-3 layers and vocabularies of
150-660 tokens; denoisers have 1-2 blocks and width 32.  A 2-step generation takes 0.1-1 s on CPU.
Written against diffusers 0.42.1, transformers 5.23.0 (tokenizers 0.23.3), torch 2.13.0.

Per layout (pixel video (B, 9, 32, 32, 3); latents as the denoiser sees them):

``unet3d`` -- ``TextToVideoSDPipeline`` (ModelScope text-to-video-ms-1.7b layout; diffusers keeps it under
    ``pipelines/deprecated`` and logs a deprecation warning on construction).
    UNet3DConditionModel (block_out_channels (16, 32), CrossAttnDownBlock3D + DownBlock3D, attention_head_dim=4 which
    UNet3D uses as the number of heads), AutoencoderKL (2D image VAE, block_out_channels (8, 8, 8, 8) -> 8x, applied
    per frame), CLIPTextModel (hidden 32, 2 layers, 16 positions; the pipeline uses last_hidden_state) + CLIPTokenizer
    (model_max_length 16: the pipeline always pads to tokenizer.model_max_length), DDIMScheduler as ModelScope ships it
    (epsilon, scaled_linear 0.00085-0.012, clip_sample False, set_alpha_to_one False, steps_offset 1, "leading").
    Call: num_frames=9, height=32, width=32 (any multiple of 8 works, down to 8x8 = 1x1 latents; no temporal
    compression, so any frame count works).  CFG batches uncond/cond together (guidance_scale default 9).
    Latents (1, 4, 9, 4, 4) (B, C, T, h, w).  VAE scaling: z * scaling_factor 0.18215, no shift; decode divides.

``cogvideox`` -- ``CogVideoXPipeline`` (CogVideoX-5b layout).
    CogVideoXTransformer3DModel (2 heads x 16, 2 layers, patch 2, use_rotary_positional_embeddings=True so no
    sincos/learned position table; sample_height/width 4 = latent size of 32 px, sample_frames 9),
    AutoencoderKLCogVideoX (block_out_channels (8, 8, 8, 8), temporal_compression_ratio 4, latent_channels 4,
    scaling_factor 0.7 as 5b; 2b uses 1.15258426), T5EncoderModel (d_model 32, 2 layers, gated-gelu as t5-v1_1) +
    T5Tokenizer, CogVideoXDDIMScheduler as 5b (v_prediction, rescale_betas_zero_snr True, timestep_spacing
    "trailing", snr_shift_scale 1.0 (2b: 3.0), set_alpha_to_one True, steps_offset 0).
    Call: num_frames=9, height=32, width=32, max_sequence_length=16 (default 226 also works, only slower: with rotary
    embeddings the text length is free).  Latents (1, 3, 4, 4, 4) -- NOTE the layout (B, T, C, h, w): CogVideoX
    keeps latents frame-major in the pipeline and transformer, and permutes to (B, C, T, h, w) only for the VAE.
    VAE scaling: z * 0.7, no shift.  Quirks: latent frames T = (num_frames - 1) // 4 + 1 and the VAE decodes an odd
    T into 1 + 4*(T-1) frames but an even T into 4*T (5 frames -> T=2 -> 8 frames out), so use num_frames = 8k+1;
    16x16 px is the smallest size (8x8 fails in the rotary-grid code); CFG batches uncond/cond together
    (guidance_scale default 6).

``wan`` -- ``WanPipeline`` (Wan 2.1 T2V layout; transformer_2 None, boundary_ratio None, expand_timesteps False).
    WanTransformer3DModel (2 heads x 16, 2 layers, patch (1, 2, 2), text_dim 32, freq_dim 32, rope_max_seq_len 32),
    AutoencoderKLWan (base_dim 8, dim_mult [1, 1, 1, 1] -> 8x, temperal_downsample [False, True, True] -> 4x, z_dim 4,
    latents_mean/latents_std = the first 4 entries of Wan 2.1's 16-channel statistics), UMT5EncoderModel (d_model 32,
    2 layers) + T5Tokenizer, UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
    flow_shift=3.0) as Wan 2.1 ships (the pipeline's type hint says FlowMatchEulerDiscreteScheduler; both work).
    Call: num_frames=9, height=32, width=32, max_sequence_length=16 (default 512 works, slower).  height/width must
    be multiples of 16 (check_inputs raises; sizes that are not multiples of vae 8 x patch 2 are rounded down).
    Latents (1, 4, 3, 4, 4) (B, C, T, h, w).  VAE scaling: z_model = (z - latents_mean) / latents_std per channel;
    decode does z = z_model * std + mean (no scaling_factor).  Quirks: text embeddings past the prompt's real length
    are zeroed (padding positions replaced by zeros, not masked; the transformer gets no text mask); CFG runs two
    separate transformer passes (guidance_scale default 5, negative prompt default "").

``hunyuan`` -- ``HunyuanVideoPipeline`` (HunyuanVideo layout).
    HunyuanVideoTransformer3DModel (2 heads x 16, rope_axes_dim (4, 6, 6), 1 double + 1 single block, 1 refiner
    layer, patch 2 x 1, guidance_embeds=True, text_embed_dim 32, pooled_projection_dim 16),
    AutoencoderKLHunyuanVideo (block_out_channels (8, 8, 8, 8), 8x / 4x, latent_channels 4, scaling_factor 0.476986),
    LlamaModel (hidden 32, 3 layers, GQA 4/2 heads) + LlamaTokenizer (bos <|begin_of_text|>, right padding, the
    chat-template special tokens), CLIPTextModel (hidden 16, 77 positions) + CLIPTokenizer (the pipeline hard-codes
    77 CLIP tokens), FlowMatchEulerDiscreteScheduler(shift=7.0).
    Call: num_frames=9, height=32, width=32, max_sequence_length=16 (default 256 works, slower).  prompt_template can
    stay the default: the tiny Llama vocabulary is built so that the default template's system part tokenizes to
    exactly DEFAULT_PROMPT_TEMPLATE["crop_start"] = 95 tokens (BOS included), like the real tokenizer; for any other
    template use ``hunyuan_prompt_template(tokenizer, template)``.  height/width must be multiples of 16.
    Latents (1, 4, 3, 4, 4) (B, C, T, h, w).  VAE scaling: z * 0.476986, no shift.  Quirks: the Llama prompt is
    wrapped in the template and the first crop_start tokens are cut off, so the text length is max_sequence_length;
    text states are hidden_states[-3] (2 layers skipped); the pooled CLIP output (pooler_output at the EOS token)
    feeds pooled_projections; guidance is distilled: guidance_scale * 1000 is embedded (default 6.0), there is no
    CFG unless true_cfg_scale > 1 and a negative prompt are given; sigmas are linspace(1, 0, steps+1)[:-1] shifted.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

LAYOUTS = ("unet3d", "cogvideox", "wan", "hunyuan", "ltx")

NUM_FRAMES = 9
HEIGHT = WIDTH = 32
MAX_SEQUENCE_LENGTH = 16

SPECS: dict[str, dict] = {
    "unet3d": dict(pipeline="TextToVideoSDPipeline", latent_shape=(1, 4, 9, 4, 4), latent_layout="BCThw",
                   call=dict(num_frames=NUM_FRAMES, height=HEIGHT, width=WIDTH),
                   vae_scaling=dict(scaling_factor=0.18215)),
    "cogvideox": dict(pipeline="CogVideoXPipeline", latent_shape=(1, 3, 4, 4, 4), latent_layout="BTChw",
                      call=dict(num_frames=NUM_FRAMES, height=HEIGHT, width=WIDTH,
                                max_sequence_length=MAX_SEQUENCE_LENGTH),
                      vae_scaling=dict(scaling_factor=0.7)),
    "wan": dict(pipeline="WanPipeline", latent_shape=(1, 4, 3, 4, 4), latent_layout="BCThw",
                call=dict(num_frames=NUM_FRAMES, height=HEIGHT, width=WIDTH, max_sequence_length=MAX_SEQUENCE_LENGTH),
                vae_scaling=dict(latents_mean=[-0.7571, -0.7089, -0.9113, 0.1075],
                                 latents_std=[2.8184, 1.4541, 2.3275, 2.6558])),
    "hunyuan": dict(pipeline="HunyuanVideoPipeline", latent_shape=(1, 4, 3, 4, 4), latent_layout="BCThw",
                    call=dict(num_frames=NUM_FRAMES, height=HEIGHT, width=WIDTH,
                              max_sequence_length=MAX_SEQUENCE_LENGTH),
                    vae_scaling=dict(scaling_factor=0.476986)),
    "ltx": dict(pipeline="LTXPipeline", latent_shape=(1, 48, 4), latent_layout="packed",
                unpacked_shape=(1, 4, 3, 4, 4),
                call=dict(num_frames=NUM_FRAMES, height=HEIGHT, width=WIDTH, max_sequence_length=MAX_SEQUENCE_LENGTH),
                vae_scaling=dict(latents_mean=[0.1, -0.2, 0.3, 0.05], latents_std=[1.5, 0.8, 1.2, 2.0],
                                 scaling_factor=1.0)),
}


def call_kwargs(layout: str, **overrides) -> dict:
    """Arguments to pass to the tiny pipeline's ``__call__`` (frames, size, text length), updated with ``overrides``."""
    _check_layout(layout)
    return {**SPECS[layout]["call"], **overrides}


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: expected one of {LAYOUTS}")


# ----------------------------------------------------------------------------------------------------------- tokenizers

WORDS = tuple(
    "a an the of in on at to and with is are by for from this that it its".split()
    + "moving moves move left right up down digit number red green blue yellow cyan magenta white black gray".split()
    + "video image frame scene camera slowly fast small large big bright dark background negative blurry low".split()
    + "quality static dance monkey cat dog ball square circle person walking running water sky".split()
)
LETTERS = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
PUNCTUATION = ".,!?'-:;"

LLAMA_SPECIAL = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")


def _bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair merging as ``tokenizers`` does it: repeatedly merge the adjacent pair of lowest rank."""
    pieces = list(pieces)
    while len(pieces) > 1:
        best = min(((ranks[p], i) for i, p in enumerate(zip(pieces, pieces[1:])) if p in ranks), default=None)
        if best is None:
            break
        i = best[1]
        pieces[i:i + 2] = [pieces[i] + pieces[i + 1]]
    return pieces


def _add_merges(vocab: dict[str, int], merges: list[tuple[str, str]], words: list[list[str]]) -> None:
    """Append merges (and their tokens) so that each word, given as its initial pieces, becomes a single token.

    New merges only ever get higher ranks, so words made whole earlier stay whole."""
    ranks = {m: i for i, m in enumerate(merges)}
    for pieces in words:
        current = _bpe(pieces, ranks)
        while len(current) > 1:
            merge = (current[0], current[1])
            ranks[merge] = len(merges)
            merges.append(merge)
            current = [current[0] + current[1], *current[2:]]
            vocab.setdefault(current[0], len(vocab))


def make_clip_tokenizer(model_max_length: int):
    """A real ``CLIPTokenizer`` (byte-level BPE, lowercasing, ``</w>`` word ends) over WORDS + letters/digits."""
    from transformers import CLIPTokenizer

    chars = list(LETTERS + DIGITS + PUNCTUATION)
    vocab: dict[str, int] = {}
    for token in chars + [c + "</w>" for c in chars]:
        vocab[token] = len(vocab)
    merges: list[tuple[str, str]] = []
    _add_merges(vocab, merges, [[*w[:-1], w[-1] + "</w>"] for w in WORDS if len(w) > 1])
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def make_t5_tokenizer(model_max_length: int):
    """A real ``T5Tokenizer`` (Unigram, metaspace ``▁``, appends ``</s>``; pad 0, eos 1, unk 2), no sentinel tokens.

    Used for both T5 (CogVideoX) and UMT5 (Wan), whose tokenizers share this structure."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(c, -5.0) for c in LETTERS + DIGITS + PUNCTUATION]
    vocab += [("▁" + c, -1.5) for c in LETTERS + DIGITS]
    vocab += [("▁" + w, -1.0) for w in WORDS if len(w) > 1]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


def _hunyuan_default_template() -> str:
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    return DEFAULT_PROMPT_TEMPLATE["template"]


def make_llama_tokenizer(model_max_length: int = 256):
    """A real ``LlamaTokenizer`` (BPE over metaspace text, BOS ``<|begin_of_text|>`` added, right padding, the
    Llama-3 chat header tokens as special tokens) whose vocabulary covers HunyuanVideo's default prompt template with
    word-level tokens, so that the template's system part is exactly 95 tokens like with the real tokenizer."""
    from transformers import LlamaTokenizer

    template = _hunyuan_default_template()
    plain = template
    for special in LLAMA_SPECIAL:
        plain = plain.replace(special, " ")
    chars = sorted(set(plain + LETTERS + DIGITS + PUNCTUATION) - set(" {}"))
    vocab = {"<unk>": 0, "<|begin_of_text|>": 1, "<|end_of_text|>": 2, "▁": 3}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    template_words = set(re.findall(r"[A-Za-z]+", plain))
    prefixed = sorted(template_words | set(WORDS), key=lambda w: (len(w), w))
    merges: list[tuple[str, str]] = []
    # words after a space carry the metaspace prefix; "system", "user", "Describe" and the prompt's first word follow
    # a special token or a newline and do not; "\n\n" is one token, as in Llama 3
    _add_merges(vocab, merges, [["▁", *w] for w in prefixed if len(w) > 0])
    _add_merges(vocab, merges, [list(w) for w in ("system", "user", "Describe", *WORDS) if len(w) > 1])
    _add_merges(vocab, merges, [["\n", "\n"]])
    return LlamaTokenizer(vocab=vocab, merges=merges, unk_token="<unk>", bos_token="<|begin_of_text|>",
                          eos_token="<|end_of_text|>", pad_token="<|end_of_text|>", add_bos_token=True,
                          add_eos_token=False, padding_side="right", additional_special_tokens=list(LLAMA_SPECIAL[2:]),
                          model_max_length=model_max_length)


def hunyuan_prompt_template(tokenizer, template: str | None = None) -> dict:
    """``prompt_template`` for HunyuanVideoPipeline: ``crop_start`` = number of tokens (BOS included) before ``{}``."""
    template = template or _hunyuan_default_template()
    crop_start = len(tokenizer(template.split("{}")[0]).input_ids)
    return {"template": template, "crop_start": crop_start}


# ------------------------------------------------------------------------------------------------------- text encoders

def _clip_text_encoder(tokenizer, hidden_size: int, max_positions: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                            projection_dim=hidden_size, num_hidden_layers=2, num_attention_heads=2,
                            max_position_embeddings=max_positions, hidden_act="quick_gelu",
                            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id)
    return CLIPTextModel(config)


def _t5_config_kwargs(tokenizer) -> dict:
    return dict(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0,
                feed_forward_proj="gated-gelu", pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)


# -------------------------------------------------------------------------------------------------------------- layouts

def _unet3d(seed: int):
    from diffusers import AutoencoderKL, DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel

    tokenizer = make_clip_tokenizer(MAX_SEQUENCE_LENGTH)
    torch.manual_seed(seed)
    text_encoder = _clip_text_encoder(tokenizer, hidden_size=32, max_positions=MAX_SEQUENCE_LENGTH)
    torch.manual_seed(seed + 1)
    unet = UNet3DConditionModel(
        sample_size=HEIGHT // 8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, cross_attention_dim=32,
        attention_head_dim=4)
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, sample_size=HEIGHT, scaling_factor=0.18215)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", prediction_type="epsilon", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return TextToVideoSDPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                 scheduler=scheduler)


def _t5_text(seed: int):
    """``(tokenizer, T5EncoderModel)`` drawn from ``seed`` (CogVideoX's and LTX-Video's text parts)."""
    from transformers import T5Config, T5EncoderModel

    tokenizer = make_t5_tokenizer(MAX_SEQUENCE_LENGTH)
    torch.manual_seed(seed)
    return tokenizer, T5EncoderModel(T5Config(**_t5_config_kwargs(tokenizer)))


def _cogvideox(seed: int):
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel

    tokenizer, text_encoder = _t5_text(seed)
    torch.manual_seed(seed + 1)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=32,
        text_embed_dim=32, num_layers=2, sample_width=WIDTH // 8, sample_height=HEIGHT // 8, sample_frames=NUM_FRAMES,
        patch_size=2, temporal_compression_ratio=4, max_text_seq_length=MAX_SEQUENCE_LENGTH,
        use_rotary_positional_embeddings=True, use_learned_positional_embeddings=False)
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
        layers_per_block=1, norm_num_groups=4, temporal_compression_ratio=4, sample_height=HEIGHT,
        sample_width=WIDTH, scaling_factor=0.7)
    scheduler = CogVideoXDDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=True, steps_offset=0, prediction_type="v_prediction",
        rescale_betas_zero_snr=True, timestep_spacing="trailing", snr_shift_scale=1.0)
    return CogVideoXPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                             scheduler=scheduler)


def _wan(seed: int):
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = make_t5_tokenizer(MAX_SEQUENCE_LENGTH)
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(**_t5_config_kwargs(tokenizer)))
    torch.manual_seed(seed + 1)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
        text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32)
    torch.manual_seed(seed + 2)
    scaling = SPECS["wan"]["vae_scaling"]
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=list(scaling["latents_mean"]),
                           latents_std=list(scaling["latents_std"]))
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                        num_train_timesteps=1000)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                       transformer=transformer, transformer_2=None, boundary_ratio=None)


def _hunyuan(seed: int):
    from diffusers import (AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline,
                           HunyuanVideoTransformer3DModel)
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
    from transformers import LlamaConfig, LlamaModel

    tokenizer = make_llama_tokenizer()
    crop_start = hunyuan_prompt_template(tokenizer)["crop_start"]
    if crop_start != DEFAULT_PROMPT_TEMPLATE["crop_start"]:
        raise AssertionError(f"tiny Llama tokenizer gives crop_start {crop_start}, expected "
                             f"{DEFAULT_PROMPT_TEMPLATE['crop_start']}")
    tokenizer_2 = make_clip_tokenizer(77)
    torch.manual_seed(seed)
    text_encoder = LlamaModel(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    torch.manual_seed(seed + 1)
    text_encoder_2 = _clip_text_encoder(tokenizer_2, hidden_size=16, max_positions=77)
    torch.manual_seed(seed + 2)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, mlp_ratio=2.0, patch_size=2, patch_size_t=1,
        guidance_embeds=True, text_embed_dim=32, pooled_projection_dim=16, rope_axes_dim=(4, 6, 6))
    torch.manual_seed(seed + 3)
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8, temporal_compression_ratio=4,
        mid_block_add_attention=True)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    return HunyuanVideoPipeline(text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae,
                                scheduler=scheduler, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2)


def _ltx(seed: int):
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel

    tokenizer, text_encoder = _t5_text(seed)
    torch.manual_seed(seed + 1)
    transformer = LTXVideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=16,
        cross_attention_dim=32, num_layers=2, caption_channels=32, qk_norm="rms_norm_across_heads")
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(False,) * 5, patch_size=2,
        timestep_conditioning=True)
    scaling = SPECS["ltx"]["vae_scaling"]
    vae.latents_mean.copy_(torch.tensor(scaling["latents_mean"]))
    vae.latents_std.copy_(torch.tensor(scaling["latents_std"]))
    scheduler = FlowMatchEulerDiscreteScheduler(  # LTX-Video 0.9's scheduler_config.json
        num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
        base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1)
    return LTXPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                       transformer=transformer)


_BUILDERS = {"unet3d": _unet3d, "cogvideox": _cogvideox, "wan": _wan, "hunyuan": _hunyuan, "ltx": _ltx}


def make_tiny_pipeline(layout: str, seed: int = 0):
    """The tiny pipeline object itself (modules in eval mode), not saved."""
    _check_layout(layout)
    pipe = _BUILDERS[layout](seed)
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_pipeline(layout: str, out: Path, seed: int = 0) -> Path:
    """Build the tiny ``layout`` pipeline with weights drawn from ``seed`` and ``save_pretrained`` it into ``out``."""
    out = Path(out)
    make_tiny_pipeline(layout, seed).save_pretrained(out)
    return out


def build_tiny_wan22(out: Path, seed: int = 0, boundary_ratio: float = 0.875) -> Path:
    """The tiny Wan pipeline in Wan 2.2 A14B's two-expert layout: ``transformer`` (high noise) and a second,
    differently drawn ``transformer_2`` (low noise) switched at ``boundary_ratio``; saved into ``out``."""
    from diffusers import WanPipeline

    base = make_tiny_pipeline("wan", seed)
    low = make_tiny_pipeline("wan", seed + 100).transformer
    pipe = WanPipeline(tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=base.vae,
                       scheduler=base.scheduler, transformer=base.transformer, transformer_2=low,
                       boundary_ratio=boundary_ratio)
    out = Path(out)
    pipe.save_pretrained(out)
    return out


def build_tiny_wan22_ti2v(out: Path, seed: int = 0) -> Path:
    """The tiny Wan pipeline in Wan 2.2 TI2V-5B's layout, as ``WanPipeline`` (text to video) runs it:
    ``expand_timesteps`` (a timestep per latent token) and a residual Wan 2.2 VAE that patchifies 2x2 pixels
    (``in_channels`` 12, ``patch_size`` 2, 16x spatial, here 8 latent channels for TI2V's 48), the transformer
    taking those channels; saved into ``out``."""
    from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel

    base = make_tiny_pipeline("wan", seed)
    torch.manual_seed(seed + 5)
    channels = 8
    vae = AutoencoderKLWan(base_dim=8, decoder_base_dim=8, z_dim=channels, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], is_residual=True, patch_size=2, in_channels=12,
                           out_channels=12, scale_factor_spatial=16, scale_factor_temporal=4,
                           latents_mean=[0.1 * i - 0.3 for i in range(channels)],
                           latents_std=[1.0 + 0.1 * i for i in range(channels)])
    torch.manual_seed(seed + 6)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=channels,
        out_channels=channels, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    pipe = WanPipeline(tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=vae, scheduler=base.scheduler,
                       transformer=transformer, transformer_2=None, boundary_ratio=None, expand_timesteps=True)
    out = Path(out)
    pipe.save_pretrained(out)
    return out


def build_tiny_cogvideox_i2v(out: Path, seed: int = 0) -> Path:
    """The tiny CogVideoX pipeline as ``CogVideoXImageToVideoPipeline`` (CogVideoX-5b-I2V's layout): the same parts,
    its transformer taking twice the latent channels (noisy latents and the first frame's latents); saved into
    ``out``. Called with ``image=`` a PIL image (or tensor) of the first frame."""
    from diffusers import CogVideoXImageToVideoPipeline, CogVideoXTransformer3DModel

    base = make_tiny_pipeline("cogvideox", seed)
    config = dict(base.transformer.config)
    torch.manual_seed(seed + 3)
    transformer = CogVideoXTransformer3DModel(**{**{k: v for k, v in config.items() if not k.startswith("_")},
                                                 "in_channels": 2 * config["out_channels"]})
    CogVideoXImageToVideoPipeline(tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=base.vae,
                                  transformer=transformer, scheduler=base.scheduler).save_pretrained(Path(out))
    return Path(out)


def build_tiny_wan_i2v(out: Path, seed: int = 0, two_experts: bool = False) -> Path:
    """The tiny Wan pipeline as ``WanImageToVideoPipeline``: the transformer takes the noisy latents, a 4-channel
    first-frame mask and the latents of [image, zeros ...] (4 + 4 + 4 = 12 channels). Wan 2.1 I2V's layout
    (default): with a tiny CLIP vision encoder (hidden 16, 2 layers, 32x32 images in 8x8 patches) whose
    second-to-last states the transformer reads (``image_dim`` 16). ``two_experts``: Wan 2.2 I2V-A14B's layout
    instead, two such transformers without image states, switched at ``boundary_ratio`` 0.9. Saved into ``out``."""
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    base = make_tiny_pipeline("wan", seed)
    config = {k: v for k, v in base.transformer.config.items() if not k.startswith("_")}
    inner = config["num_attention_heads"] * config["attention_head_dim"]

    def transformer(offset: int, image_dim):
        torch.manual_seed(seed + offset)
        return WanTransformer3DModel(**{**config, "in_channels": 12, "image_dim": image_dim,
                                        "added_kv_proj_dim": inner if image_dim else None})

    if two_experts:
        pipe = WanImageToVideoPipeline(tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=base.vae,
                                       scheduler=base.scheduler, transformer=transformer(5, None),
                                       transformer_2=transformer(6, None), boundary_ratio=0.9)
    else:
        torch.manual_seed(seed + 4)
        encoder = CLIPVisionModel(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                                   num_attention_heads=2, image_size=32, patch_size=8))
        processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        pipe = WanImageToVideoPipeline(tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=base.vae,
                                       scheduler=base.scheduler, image_processor=processor, image_encoder=encoder,
                                       transformer=transformer(5, 16))
    pipe.save_pretrained(Path(out))
    return Path(out)


def build_tiny_wan22_ti2v_image(out: Path, seed: int = 0) -> Path:
    """The tiny TI2V-5B layout as ``WanImageToVideoPipeline`` runs it (image to video): the same parts as
    :func:`build_tiny_wan22_ti2v`, ``expand_timesteps``, the image's latents as the first latent frame; saved into
    ``out``."""
    import tempfile

    from diffusers import WanImageToVideoPipeline, WanPipeline

    with tempfile.TemporaryDirectory() as folder:
        parts = WanPipeline.from_pretrained(build_tiny_wan22_ti2v(Path(folder) / "t2v", seed)).components
        pipe = WanImageToVideoPipeline(tokenizer=parts["tokenizer"], text_encoder=parts["text_encoder"],
                                       vae=parts["vae"], scheduler=parts["scheduler"],
                                       transformer=parts["transformer"], expand_timesteps=True)
        pipe.save_pretrained(Path(out))
    return Path(out)
