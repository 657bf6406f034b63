"""The torch-free CLIP tokenizer gives open_clip's token ids: the oracle is open_clip's own
`tokenize` / `get_tokenizer`, on a few thousand seeded strings (unicode, emoji, HTML entities,
odd spacing, long captions cut to the context length) and the tiny models' shorter contexts."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest

from clipsearch.model.spec import load_open_clip
from clipsearch.model.tokenizer import ClipTokenizer

WORDS_TEXT = (
    "a photo of the dog cat running jumping over under red green blue big small city night beach sunset "
    "mountain river children playing football street car bicycle man woman holding umbrella snow tree "
    "don't it's we're they've I'm you'll he'd DOG Cat PhOtO 12 2024 3.14 1,000 #hashtag @user e-mail "
    "naïve café résumé façade Ångström straße Ελλάδα русский 日本語 中文 한국어 العربية हिन्दी ไทย "
    "😀 🐶 🐱 🍜 👍🏽 👨‍👩‍👧 🇫🇷 ❤️ ✨ &amp; &lt;b&gt; &quot;quoted&quot; <i>html</i> http://x.org/a?b=c "
    "—dash… “curly” ‘quotes’ ½ ² ™ © ° ﬁ ＡＢＣ ｶﾀｶﾅ ٣ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ..., !!! ??? ((( ))) ___ ~~~"
)
WORDS = WORDS_TEXT.split()
SEPARATORS = (" ", " ", " ", "  ", "\t", "\n", ", ", "-", "", " . ")


def seeded_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = ["", " ", "\n\t", "a", "A", "<start_of_text>", "<end_of_text> x", "ﬁ" * 3, "word " * 200]
    while len(texts) < n:
        length = rng.choice((1, 2, 3, 5, 8, 13, 21, 40, 90))  # 40 and 90 words pass the 77-token context
        parts = [rng.choice(WORDS) + rng.choice(SEPARATORS) for _ in range(length)]
        if rng.random() < 0.1:  # characters no word list holds: controls, private use, any code point
            parts.append("".join(chr(rng.randrange(1, 0x2FFFF)) for _ in range(rng.randint(1, 6))))
        texts.append("".join(parts))
    return texts


def test_token_ids_equal_open_clip_on_thousands_of_strings() -> None:
    texts = seeded_texts(3000)
    ours = ClipTokenizer()(texts)
    theirs = load_open_clip().tokenize(texts).numpy()
    assert ours.dtype == np.int64 and ours.shape == theirs.shape == (3000, 77)
    mismatched = [texts[i] for i in np.flatnonzero((ours != theirs).any(axis=1))]
    assert not mismatched, f"{len(mismatched)} strings differ, e.g. {mismatched[:3]!r}"
    cut = [row for row, text in zip(ours, texts) if len(text.split()) >= 90]
    assert cut and all(row[-1] == ClipTokenizer().eot_token_id for row in cut)  # truncated, ends with EOT


@pytest.mark.parametrize("arch", ["tiny", "tiny-rn"])
def test_short_contexts_equal_the_models_own_tokenizer(arch: str) -> None:
    tokenizer = load_open_clip().get_tokenizer(arch)
    texts = seeded_texts(300, seed=1)
    theirs = tokenizer(texts).numpy()
    np.testing.assert_array_equal(ClipTokenizer(theirs.shape[1])(texts), theirs)


def test_tokenizing_imports_no_torch() -> None:
    code = (
        "import sys; from clipsearch.model.tokenizer import ClipTokenizer; ClipTokenizer()(['a dog 🐶']); "
        "print(sorted(m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
