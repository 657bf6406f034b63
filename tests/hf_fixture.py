"""Tiny checkpoints in the Hugging Face layouts, built offline: a random transformers CLIPModel saved
with its processor, an open_clip model saved as a hub repo, and a fake Hugging Face cache holding them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

VOCAB_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
REVISION = "0123456789abcdef0123456789abcdef01234567"
TOKEN_IDS = {"bos_token_id": "<|startoftext|>", "eos_token_id": "<|endoftext|>", "pad_token_id": "<|endoftext|>"}


def _byte_symbols() -> list[str]:
    """GPT-2's byte-to-unicode alphabet (the 256 base symbols of a byte-level BPE)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = [], 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + extra))
            extra += 1
    return symbols


def tiny_clip_tokenizer():  # type: ignore[no-untyped-def]
    """A CLIP tokenizer over a tiny vocabulary: every byte, alone and word-final, plus a few merges."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    merges = [("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"), ("p", "h")]
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(pair) for pair in merges] + list(VOCAB_SPECIALS)
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def save_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A random CLIPModel (32 px images, width 32, 2 layers) and its CLIPProcessor, save_pretrained into `folder`."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = tiny_clip_tokenizer()
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in TOKEN_IDS.items()}
    layers = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    text = {**layers, **ids, "vocab_size": len(tokenizer), "max_position_embeddings": 77}
    config = CLIPConfig(
        text_config=text, vision_config={**layers, "image_size": 32, "patch_size": 8}, projection_dim=16
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    with torch.no_grad():  # not 100: the checkpoint's own scale must reach `predict`
        model.logit_scale.fill_(2.5)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = CLIPProcessor(image_processor=images, tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def save_tiny_open_clip_repo(folder: Path) -> Path:
    """clipsearch's shipped "tiny" open_clip architecture, seeded, saved as an open_clip hub repo."""
    import torch
    from safetensors.torch import save_file

    from clipsearch.model.spec import CONFIG_DIR, load_open_clip

    model_cfg = json.loads((CONFIG_DIR / "tiny.json").read_text())
    torch.manual_seed(1)
    model = load_open_clip().create_model("tiny", pretrained=None)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def put_in_hf_cache(hf_home: Path, repo_id: str, files: Path, revision: str = REVISION) -> Path:
    """Lay `files` out as the Hugging Face cache does: hub/models--org--name/{refs/main, snapshots/REV/}."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    shutil.copytree(files, repo / "snapshots" / revision)
    return repo / "snapshots" / revision


def save_tiny_siglip(folder: Path, seed: int = 0) -> Path:
    """A random SiglipModel with the tiny CLIP tokenizer and image processor (SigLIP's own tokenizer is a
    sentencepiece model, which cannot be built offline; the encoder treats any processor alike)."""
    import torch
    from transformers import CLIPImageProcessor, CLIPProcessor, SiglipConfig, SiglipModel

    tokenizer = tiny_clip_tokenizer()
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in TOKEN_IDS.items()}
    layers = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    text = {**layers, **ids, "vocab_size": len(tokenizer), "max_position_embeddings": 16}
    config = SiglipConfig(text_config=text, vision_config={**layers, "image_size": 32, "patch_size": 8})
    torch.manual_seed(seed)
    SiglipModel(config).save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder
