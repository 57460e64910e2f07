"""The embedded synthetic catalog: generated offline in seconds, honest about being synthetic.

No public multi-modal recommendation data set can be fetched here, so the default data is made
so that the paper's questions stay meaningful on it:

* items have latent attributes: a category (drawn as a shape), a colour (named RGB), a pattern
  (IMAGE ONLY: never written in the text), a material and a style (TEXT ONLY: never drawn), plus
  size / position / brightness jitter. Text-only, image-only and fused item encoders therefore see
  different, partly overlapping information and can genuinely differ;
* with ``SynthConfig.images = "fashion-mnist"`` each item's picture is instead a real photo from
  Fashion-MNIST of the garment class its category maps to (`GARMENTS`), tinted with the item's
  colour, the pattern laid over the garment as a texture, and the category's words in the text
  become the garment's words. Which attributes are image-only and text-only does not change;
* users have Dirichlet preferences over every attribute and sequential dynamics: a current
  interest (category + colour) that drifts, and complementary category transitions driven by the
  previous item, so the order of a sequence matters;
* item popularity is Zipf-distributed and a share of items is deliberately rare (cold).

Scale: each step samples attribute values for all active users at once, then a few candidate
items inside the matching (category, colour) bucket by popularity, and picks one of them by the
user's affinity to their pattern, material and style (sampling-importance-resampling of
popularity x affinity). No users x items matrix is ever built, so 200K users x 85K items runs in
minutes. Everything is deterministic from ``SynthConfig.seed`` and the domain.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from mmsr_lib.config import SynthConfig
from mmsr_lib.data import fashion_mnist
from mmsr_lib.data.format import FORMAT_VERSION, META_FILE, check_writable_target, write_dataset
from mmsr_lib.util.paths import resolve

log = logging.getLogger("mmsr.data")

GENERATOR_VERSION = 1  # bump when the generated data changes for the same knobs
ATTRIBUTES_FILE = "item_attributes.tsv"

# -- the attribute space (shared by the source and the target domain) ------------------------
CATEGORIES = ("bowl", "box", "tent", "kite", "ring", "badge", "tile", "scarf")
SHAPES = ("circle", "square", "triangle", "diamond", "annulus", "cross", "hexagon", "bar")
CATEGORY_WORDS = {
    "bowl": ("bowl", "basin"), "box": ("box", "crate"), "tent": ("tent", "shelter"),
    "kite": ("kite",), "ring": ("ring", "hoop"), "badge": ("badge", "pin"),
    "tile": ("tile", "coaster"), "scarf": ("scarf", "wrap"),
}
# complementary category of each category (a fixed 8-cycle): "after a bowl, people buy a kite"
COMPLEMENT = np.array([3, 6, 5, 4, 7, 0, 2, 1])
SOURCE_CATEGORY_MIX = np.array([1.6, 1.4, 1.2, 1.0, 0.9, 0.8, 0.6, 0.5])
TARGET_CATEGORY_MIX = SOURCE_CATEGORY_MIX[::-1].copy()  # the target domain's shifted mix

COLOURS = {
    "red": (214, 39, 40), "orange": (245, 140, 30), "yellow": (236, 206, 40),
    "green": (44, 160, 44), "teal": (23, 150, 150), "blue": (31, 90, 210),
    "purple": (128, 60, 180), "pink": (240, 120, 170), "brown": (130, 80, 40),
    "black": (35, 35, 35),
}
COLOUR_WORDS = {
    "red": ("red", "crimson", "scarlet"), "orange": ("orange", "tangerine"),
    "yellow": ("yellow", "mustard", "lemon"), "green": ("green", "emerald"),
    "teal": ("teal", "turquoise"), "blue": ("blue", "navy", "cobalt"),
    "purple": ("purple", "violet"), "pink": ("pink", "rose"),
    "brown": ("brown", "chocolate", "tan"), "black": ("black", "charcoal"),
}
PATTERNS = ("solid", "stripes", "dots", "checks")  # image only
MATERIALS = ("cotton", "wool", "leather", "linen", "silk", "canvas")  # text only
MATERIAL_WORDS = {
    "cotton": ("cotton",), "wool": ("wool", "merino"), "leather": ("leather",),
    "linen": ("linen", "flax"), "silk": ("silk", "satin"), "canvas": ("canvas",),
}
STYLES = ("classic", "sporty", "minimal", "vintage", "boho", "urban")  # text only
STYLE_WORDS = {
    "classic": ("classic", "timeless"), "sporty": ("sporty", "athletic"),
    "minimal": ("minimal", "minimalist"), "vintage": ("vintage", "retro"),
    "boho": ("boho", "bohemian"), "urban": ("urban", "streetwear"),
}
# images="fashion-mnist": category k is a real garment class, its photo and its words. The
# categories' complement cycle (bowl -> kite -> ring -> scarf -> box -> tile -> tent -> badge)
# becomes an outfit: t-shirt -> trousers -> sneaker -> bag -> dress -> sandal -> coat -> ankle
# boot -> t-shirt. Fashion-MNIST's pullover and shirt (the classes most confused with t-shirt and
# coat) are not used.
GARMENTS = ("t-shirt", "dress", "coat", "trousers", "sneaker", "ankle boot", "sandal", "bag")
GARMENT_CLASS = tuple(fashion_mnist.CLASSES.index(c) for c in (
    "t-shirt/top", "dress", "coat", "trouser", "sneaker", "ankle boot", "sandal", "bag"))
GARMENT_WORDS = {
    "t-shirt": ("t-shirt", "tee", "top"), "dress": ("dress", "frock"), "coat": ("coat", "jacket"),
    "trousers": ("trousers", "pants"), "sneaker": ("sneaker", "trainer"),
    "ankle boot": ("ankle boot", "boot"), "sandal": ("sandal",), "bag": ("bag", "handbag"),
}
IMAGE_SOURCES = ("rendered", "fashion-mnist")
GENERIC_NOUNS = ("item", "piece", "product")  # when the category word is omitted
OPENERS = ("new", "lovely", "handmade", "everyday", "premium")
FILLERS = (
    "Great for everyday use.", "A customer favourite.", "Easy to care for.",
    "Ships within two days.", "Limited edition.", "Designed in our studio.",
    "Makes a thoughtful gift.", "Comfortable and durable.",
)
_TEMPLATE_WORDS = ("a", "an", "made", "of", "in", "style")
# words that would reveal the (image-only) pattern; the generator never emits any of them
PATTERN_WORDS = frozenset({
    "solid", "plain", "stripe", "stripes", "striped", "dot", "dots", "dotted", "polka",
    "check", "checks", "checked", "checkered", "plaid", "tartan", "pattern", "patterned",
    "print", "printed", "spotted", "spots",
})

_USER_ALPHA = {"category": 0.6, "colour": 0.4, "pattern": 0.6, "material": 0.6, "style": 0.6}
_COLOUR_STICKINESS = 0.6  # chance the wanted colour is the current one, else one from the prefs
_OFF_COLOUR = 0.002  # relative appeal of an item in another colour than the wanted one
_COLD_DAMP = 0.05  # popularity factor of the designated long-tail items
_CANDIDATES = 32  # items drawn by popularity per step, before the affinity choice
_PROPOSAL_POWER = 0.5
_AFFINITY_POWER = 2.0  # sharpness of the pattern / material / style preferences
_NO_REPEAT = 5  # an item bought within the last this-many steps is not chosen again (if avoidable)
_MIN_SEQ_LEN = 5
_LEN_SIGMA = 0.9  # log-normal spread of the sequence lengths above the minimum
_T0 = 1_600_000_000  # first timestamp (2020-09-13), seconds
_MEAN_GAP_S = 2 * 24 * 3600
_DOMAIN_CODE = {"source": 0, "target": 1}
_PATTERN_PERIOD = 0.45  # in shape-local units, so patterns scale with the shape
_PHOTO_PATTERN_ZOOM = 1.5  # photos: pattern period 0.3 of the frame's half-width


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z][a-z'\-]*", text.lower())


VOCABULARY: frozenset[str] = frozenset(
    w
    for group in (CATEGORY_WORDS, GARMENT_WORDS, COLOUR_WORDS, MATERIAL_WORDS, STYLE_WORDS)
    for words in group.values()
    for w in _words(" ".join(words))
) | frozenset(GENERIC_NOUNS + OPENERS + _TEMPLATE_WORDS) | frozenset(
    w for f in FILLERS for w in _words(f)
)
assert not VOCABULARY & PATTERN_WORDS, "the text vocabulary must never reveal the pattern"


# -- public API ------------------------------------------------------------------------------
def knob_hash(cfg: SynthConfig) -> str:
    """Identity of a catalog: its knobs and the generator version."""
    d = dataclasses.asdict(cfg) | {"generator_version": GENERATOR_VERSION}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def ensure_catalog(cfg: SynthConfig, cache_dir: str | Path) -> Path:
    """The catalog for `cfg` under `cache_dir`, generated only if no complete copy exists.

    The directory name carries a hash of the knobs, so changing any knob gives a new catalog and
    an old one is never silently reused for different settings.
    """
    root = resolve(cache_dir) / f"synthetic-{cfg.domain}-{knob_hash(cfg)}"
    meta_path = root / META_FILE
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            meta = {}
        if (meta.get("generator_version") == GENERATOR_VERSION
                and meta.get("format_version") == FORMAT_VERSION
                and meta.get("knobs") == dataclasses.asdict(cfg)):
            return root
        log.warning("%s does not match its knobs or generator version; regenerating", root)
    # the cache folder is ours: an outdated catalog there may be replaced (anything else may not)
    return generate_catalog(cfg, root, overwrite=True)


def generate_catalog(cfg: SynthConfig, out_dir: Path, overwrite: bool = False) -> Path:
    """Generate the catalog for `cfg` into `out_dir` (written atomically) and return it.

    An existing data set at `out_dir` is replaced only with `overwrite`; any other non-empty
    folder is refused before anything is generated (`format.check_writable_target`)."""
    _validate(cfg)
    out_dir = Path(out_dir)
    check_writable_target(out_dir, overwrite)
    streams = np.random.SeedSequence([cfg.seed, _DOMAIN_CODE[cfg.domain]]).spawn(4)
    rng_items, rng_text, rng_images, rng_users = (np.random.default_rng(s) for s in streams)

    photos = labels = None
    if cfg.images == "fashion-mnist":  # fail before generating anything if they are not here
        photos, labels = fashion_mnist.load_fashion_mnist()
    names = _category_names(cfg)
    attrs = make_items(cfg, rng_items)
    texts = describe_items(attrs, cfg.text_dropout, rng_text,
                           category_words=GARMENT_WORDS if photos is not None else None)
    interactions = simulate_interactions(cfg, attrs, rng_users)

    d = cfg.domain[0]
    item_ids = _ids(f"{d}i", cfg.n_items)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_images = out_dir.parent / f".{out_dir.name}.images-{uuid.uuid4().hex[:8]}.npy"
    try:
        if photos is None:
            _render_to_file(tmp_images, attrs, cfg.image_size, cfg.noise, rng_images)
        else:
            attrs["photo"] = pick_photos(attrs["category"], labels, rng_images)
            _photos_to_file(tmp_images, attrs, photos, cfg.image_size, cfg.noise, rng_images)
        items = pd.DataFrame({"item": item_ids, "text": texts,
                              "image": np.arange(cfg.n_items, dtype=np.int64)})
        inter = pd.DataFrame({
            "user": _ids(f"{d}u", cfg.n_users)[interactions["user"]],
            "item": item_ids[interactions["item"]],
            "timestamp": interactions["timestamp"],
        })
        attributes = pd.DataFrame({
            "item": item_ids,
            "category": np.asarray(names)[attrs["category"]],
            "shape": (np.asarray(SHAPES)[attrs["category"]] if photos is None
                      else np.full(cfg.n_items, "photo")),
            "colour": np.asarray(list(COLOURS))[attrs["colour"]],
            "pattern": np.asarray(PATTERNS)[attrs["pattern"]],
            "material": np.asarray(MATERIALS)[attrs["material"]],
            "style": np.asarray(STYLES)[attrs["style"]],
            "popularity": attrs["popularity"],
            "tail": attrs["tail"].astype(np.int64),
        })
        if photos is not None:  # which Fashion-MNIST photo (train then test numbering) and class
            attributes["photo"] = attrs["photo"]
            attributes["photo_class"] = labels[attrs["photo"]].astype(np.int64)
        meta = {
            "name": f"synthetic-{cfg.domain}",
            "source": "mmsr_lib.data.synthetic (generated, not real user data)",
            "synthetic": True,
            "seed": cfg.seed,
            "domain": cfg.domain,
            "generator_version": GENERATOR_VERSION,
            "knobs": dataclasses.asdict(cfg),
            "attribute_space": {
                "categories": dict(zip(names, SHAPES if photos is None else [
                    f"Fashion-MNIST photo: {fashion_mnist.CLASSES[c]}" for c in GARMENT_CLASS],
                    strict=True)),
                "colours": {k: list(v) for k, v in COLOURS.items()},
                "patterns_image_only": list(PATTERNS),
                "materials_text_only": list(MATERIALS),
                "styles_text_only": list(STYLES),
                "complement": {names[i]: names[j] for i, j in enumerate(COMPLEMENT)},
                "category_mix": _category_mix(cfg.domain).round(4).tolist(),
            },
            "skipped": {},
        }
        if photos is not None:
            meta["photos"] = {
                "source": "Fashion-MNIST (Zalando Research, MIT licence), Debian package "
                          "dataset-fashion-mnist",
                "fingerprint": fashion_mnist.fingerprint(),
                "classes": {names[k]: fashion_mnist.CLASSES[c]
                            for k, c in enumerate(GARMENT_CLASS)},
            }
        write_dataset(out_dir, inter, items, tmp_images, meta, extras={ATTRIBUTES_FILE: attributes},
                      overwrite=overwrite)
    finally:
        tmp_images.unlink(missing_ok=True)
    return out_dir


def load_item_attributes(root: str | Path) -> pd.DataFrame:
    """The latent attributes of a synthetic catalog's items (for plots and sanity checks)."""
    path = Path(root) / ATTRIBUTES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: only synthetic catalogs (mmsr data synth) "
                                "have latent item attributes")
    return pd.read_csv(path, sep="\t", dtype={"item": str}, keep_default_na=False)


# -- items -----------------------------------------------------------------------------------
def _category_names(cfg: SynthConfig) -> tuple[str, ...]:
    return GARMENTS if cfg.images == "fashion-mnist" else CATEGORIES


def _category_mix(domain: str) -> np.ndarray:
    mix = SOURCE_CATEGORY_MIX if domain == "source" else TARGET_CATEGORY_MIX
    return mix / mix.sum()


def make_items(cfg: SynthConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Latent attributes, render jitter and popularity of every item (arrays of length n_items)."""
    n, K = cfg.n_items, len(CATEGORIES)
    drawn = rng.choice(K, size=n - K, p=_category_mix(cfg.domain))
    category = np.concatenate([np.arange(K), drawn])
    category = category[rng.permutation(n)]  # every category has at least one item
    rank = rng.permutation(n)  # popularity rank, 0 = most popular
    popularity = (rank + 1.0) ** (-cfg.popularity_alpha)
    tail = rank >= n - int(round(cfg.cold_share * n))  # the designated long tail
    popularity[tail] *= _COLD_DAMP
    return {
        "category": category,
        "colour": rng.integers(len(COLOURS), size=n),
        "pattern": rng.integers(len(PATTERNS), size=n),
        "material": rng.integers(len(MATERIALS), size=n),
        "style": rng.integers(len(STYLES), size=n),
        "scale": rng.uniform(0.55, 0.85, size=n),
        "cx": rng.uniform(-0.12, 0.12, size=n),
        "cy": rng.uniform(-0.12, 0.12, size=n),
        "brightness": rng.uniform(0.85, 1.15, size=n),
        "background": rng.integers(210, 246, size=n),
        "popularity": popularity / popularity.sum(),
        "tail": tail,
    }


def describe_items(attrs: dict[str, np.ndarray], text_dropout: float,
                   rng: np.random.Generator,
                   category_words: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    """Templated descriptions: category, colour, material, style, each omitted with prob
    `text_dropout`, with synonyms and filler. The pattern is never mentioned.

    `category_words` (in category order, e.g. `GARMENT_WORDS`) replaces the categories' words;
    the random draws are the same, so only the nouns change."""
    nouns = (list(category_words.values()) if category_words is not None
             else [CATEGORY_WORDS[c] for c in CATEGORIES])
    n = len(attrs["category"])
    keep = rng.random((4, n)) >= text_dropout  # category, colour, material, style
    pick = rng.integers(0, 1 << 30, size=(6, n))
    template = rng.integers(0, 3, size=n)
    use_opener = rng.random(n) < 0.3
    use_filler = rng.random(n) < 0.5
    colour_names = list(COLOURS)
    texts = []
    for i in range(n):
        noun = (_choose(nouns[attrs["category"][i]], pick[0, i]) if keep[0, i]
                else _choose(GENERIC_NOUNS, pick[0, i]))
        colour = (_choose(COLOUR_WORDS[colour_names[attrs["colour"][i]]], pick[1, i])
                  if keep[1, i] else None)
        material = (_choose(MATERIAL_WORDS[MATERIALS[attrs["material"][i]]], pick[2, i])
                    if keep[2, i] else None)
        style = (_choose(STYLE_WORDS[STYLES[attrs["style"][i]]], pick[3, i])
                 if keep[3, i] else None)
        opener = _choose(OPENERS, pick[4, i]) if use_opener[i] else None
        text = _sentence(int(template[i]), noun, colour, material, style, opener)
        if use_filler[i]:
            text += " " + _choose(FILLERS, pick[5, i])
        texts.append(text)
    return texts


def _choose(options: tuple[str, ...], r: int) -> str:
    return options[int(r) % len(options)]


def _sentence(template: int, noun: str, colour: str | None, material: str | None,
              style: str | None, opener: str | None) -> str:
    if template == 0:  # "A vintage crimson wool scarf."
        words = [w for w in (opener, style, colour, material, noun) if w]
        return _capitalize(f"{_article(words[0])} {' '.join(words)}.")
    if template == 1:  # "Crimson scarf made of wool, in a vintage style."
        head = " ".join(w for w in (opener, colour, noun) if w)
        text = head + (f" made of {material}" if material else "")
        text += f", in {_article(style)} {style} style" if style else ""
        return _capitalize(text + ".")
    words = [w for w in (colour, material, style) if w]  # "Scarf: crimson, wool, vintage."
    head = " ".join(w for w in (opener, noun) if w)
    return _capitalize(f"{head}: {', '.join(words)}." if words else f"{head}.")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


# -- images ----------------------------------------------------------------------------------
def render_items(attrs: dict[str, np.ndarray], size: int, noise: float,
                 rng: np.random.Generator) -> np.ndarray:
    """uint8 [n, size, size, 3] images: the category's shape filled with the colour, the pattern
    in a contrasting tone, on a light background, with position/scale/brightness jitter and
    Gaussian pixel noise of std ``noise * 255``. Vectorised over items and pixels."""
    n = len(attrs["category"])
    g = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0)
    scale = attrs["scale"].astype(np.float32)[:, None, None]
    u = (g[None, None, :] - attrs["cx"].astype(np.float32)[:, None, None]) / scale
    v = (g[None, :, None] - attrs["cy"].astype(np.float32)[:, None, None]) / scale
    u, v = np.broadcast_arrays(u, v)
    shape_mask = np.zeros((n, size, size), dtype=bool)
    for k, shape in enumerate(SHAPES):
        sel = np.flatnonzero(attrs["category"] == k)
        if sel.size:
            shape_mask[sel] = _shape_mask(shape, u[sel], v[sel])
    pattern_mask = np.zeros((n, size, size), dtype=bool)
    for p, pattern in enumerate(PATTERNS):
        sel = np.flatnonzero(attrs["pattern"] == p)
        if sel.size and pattern != "solid":
            pattern_mask[sel] = _pattern_mask(pattern, u[sel], v[sel])
    rgb = np.asarray(list(COLOURS.values()), dtype=np.float32)[attrs["colour"]]
    fill = np.clip(rgb * attrs["brightness"].astype(np.float32)[:, None], 0, 255)
    luminance = fill @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    light = luminance[:, None] > 140
    accent = np.where(light, fill * 0.45, fill + (255.0 - fill) * 0.6)  # contrasting tone
    background = attrs["background"].astype(np.float32)[:, None] * np.ones(3, np.float32)
    img = np.where(
        shape_mask[..., None],
        np.where(pattern_mask[..., None], accent[:, None, None, :], fill[:, None, None, :]),
        background[:, None, None, :],
    )
    if noise > 0:
        img += rng.normal(0.0, noise * 255.0, size=img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (au <= 0.85) & (av <= 0.85)
    if shape == "triangle":  # apex up (image rows grow downwards)
        return (v <= 0.75) & (au <= (v + 0.95) * 0.6)
    if shape == "diamond":
        return au + av <= 1.05
    if shape == "annulus":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.3)
    if shape == "cross":
        return ((au <= 0.34) & (av <= 1.0)) | ((av <= 0.34) & (au <= 1.0))
    if shape == "hexagon":
        return (av <= 0.866) & (au + 0.577 * av <= 1.0)
    if shape == "bar":
        return (au <= 1.0) & (av <= 0.4)
    raise ValueError(f"unknown shape {shape!r}")


def _pattern_mask(pattern: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    p = _PATTERN_PERIOD
    if pattern == "stripes":
        return np.floor(u / p).astype(np.int64) % 2 == 0
    if pattern == "dots":
        du = np.mod(u, p) - p / 2
        dv = np.mod(v, p) - p / 2
        return du * du + dv * dv <= (0.3 * p) ** 2
    if pattern == "checks":
        return (np.floor(u / p) + np.floor(v / p)).astype(np.int64) % 2 == 0
    raise ValueError(f"unknown pattern {pattern!r}")


def _render_to_file(path: Path, attrs: dict[str, np.ndarray], size: int, noise: float,
                    rng: np.random.Generator) -> None:
    """Render all items chunk by chunk straight into a memory-mapped .npy (bounded memory)."""
    n = len(attrs["category"])
    store = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    chunk = max(1, (1 << 20) // (size * size))
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        store[sl] = render_items({k: v[sl] for k, v in attrs.items()}, size, noise, rng)
    store.flush()
    del store


# -- real photos (images="fashion-mnist") ----------------------------------------------------
def pick_photos(category: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each item, the index of a Fashion-MNIST photo of its category's garment class.

    Within a class the photos are a random permutation, so items get distinct photos until a
    class runs out (7,000 per class; a paper-size catalog then reuses photos, each copy with
    its own colour, pattern and jitter)."""
    out = np.empty(len(category), dtype=np.int64)
    for k, cls in enumerate(GARMENT_CLASS):
        sel = np.flatnonzero(category == k)
        pool = rng.permutation(np.flatnonzero(labels == cls))
        out[sel] = pool[np.arange(len(sel)) % len(pool)]
    return out


def _bilinear_weights(coord: np.ndarray, n: int) -> np.ndarray:
    """[items, out, n] weights that sample a length-`n` axis at `coord` (pixel units, centres at
    0..n-1) linearly; samples outside the photo get weight 0 (black, i.e. background)."""
    lo = np.floor(coord)
    frac = (coord - lo).astype(np.float32)
    lo = lo.astype(np.int64)
    w = np.zeros((*coord.shape, n), dtype=np.float32)
    for idx, weight in ((lo, 1.0 - frac), (lo + 1, frac)):
        ok = (idx >= 0) & (idx < n)
        it, o = np.nonzero(ok)
        w[it, o, idx[ok]] = weight[ok]
    return w


def render_photos(attrs: dict[str, np.ndarray], photos: np.ndarray, size: int, noise: float,
                  rng: np.random.Generator) -> np.ndarray:
    """uint8 [n, size, size, 3]: each item's garment photo (`attrs["photo"]` indexes `photos`),
    resampled (bilinear, with the item's scale and position jitter) to size x size, tinted
    with its colour (the photo's grey level as shading), its pattern in the contrasting tone as
    a texture inside the garment, on the light background, plus Gaussian pixel noise."""
    src = photos[attrs["photo"]].astype(np.float32) / 255.0  # [n, 28, 28], garment bright
    n, side = len(src), src.shape[-1]
    g = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    # the photo fills its frame, so it gets a larger scale than a drawn shape: 0.75 .. 1.0
    scale = (0.75 + (attrs["scale"] - 0.55) * (0.25 / 0.30)).astype(np.float32)[:, None]
    u = (g[None, :] - attrs["cx"].astype(np.float32)[:, None]) / scale  # [n, size] columns
    v = (g[None, :] - attrs["cy"].astype(np.float32)[:, None]) / scale  # [n, size] rows
    wx = _bilinear_weights((u + 1.0) / 2.0 * side - 0.5, side)
    wy = _bilinear_weights((v + 1.0) / 2.0 * side - 0.5, side)
    grey = (wy @ src) @ wx.transpose(0, 2, 1)  # [n, size, size]
    alpha = np.clip(grey / 0.12, 0.0, 1.0)[..., None]  # the garment mask, soft at the edge
    peak = np.maximum(src.reshape(n, -1).max(1), 1e-3)[:, None, None]
    shade = (0.35 + 0.65 * np.clip(grey / peak, 0.0, 1.0))[..., None]
    # finer than on a drawn shape: a garment photo fills its frame
    uu, vv = np.broadcast_arrays(u[:, None, :] * _PHOTO_PATTERN_ZOOM,
                                 v[:, :, None] * _PHOTO_PATTERN_ZOOM)
    pattern_mask = np.zeros((n, size, size), dtype=bool)
    for p, pattern in enumerate(PATTERNS):
        sel = np.flatnonzero(attrs["pattern"] == p)
        if sel.size and pattern != "solid":
            pattern_mask[sel] = _pattern_mask(pattern, uu[sel], vv[sel])
    rgb = np.asarray(list(COLOURS.values()), dtype=np.float32)[attrs["colour"]]
    fill = np.clip(rgb * attrs["brightness"].astype(np.float32)[:, None], 0, 255)
    luminance = fill @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    accent = np.where(luminance[:, None] > 140, fill * 0.45, fill + (255.0 - fill) * 0.6)
    colour = np.where(pattern_mask[..., None], accent[:, None, None, :], fill[:, None, None, :])
    background = attrs["background"].astype(np.float32)[:, None, None, None]
    img = background * (1.0 - alpha) + colour * shade * alpha
    if noise > 0:
        img += rng.normal(0.0, noise * 255.0, size=img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _photos_to_file(path: Path, attrs: dict[str, np.ndarray], photos: np.ndarray, size: int,
                    noise: float, rng: np.random.Generator) -> None:
    """Like `_render_to_file`, for `render_photos` (bounded memory, chunk by chunk)."""
    n = len(attrs["category"])
    store = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    chunk = max(1, (1 << 20) // (size * size))
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        store[sl] = render_photos({k: v[sl] for k, v in attrs.items()}, photos, size, noise, rng)
    store.flush()
    del store


# -- users and interactions ------------------------------------------------------------------
def _sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of `probs` [n, k] (inverse CDF, vectorised)."""
    cum = np.cumsum(probs, axis=1)
    r = rng.random((len(probs), 1)) * cum[:, -1:]
    return np.minimum((cum < r).sum(axis=1), probs.shape[1] - 1)


def sequence_lengths(n_users: int, mean_seq_len: float, rng: np.random.Generator) -> np.ndarray:
    """At least 5 per user, mean about `mean_seq_len`, long-tailed (log-normal above 5)."""
    extra_mean = mean_seq_len - _MIN_SEQ_LEN
    if extra_mean <= 0:
        return np.full(n_users, _MIN_SEQ_LEN, dtype=np.int64)
    mu = np.log(extra_mean) - _LEN_SIGMA**2 / 2
    extra = rng.lognormal(mu, _LEN_SIGMA, size=n_users)
    extra = np.minimum(extra, 20 * mean_seq_len)  # bound the simulation loop
    return _MIN_SEQ_LEN + np.rint(extra).astype(np.int64)


def simulate_interactions(cfg: SynthConfig, attrs: dict[str, np.ndarray],
                          rng: np.random.Generator) -> dict[str, np.ndarray]:
    """User sequences as flat arrays user, item, timestamp (grouped by user, time increasing)."""
    U = cfg.n_users
    K, C = len(CATEGORIES), len(COLOURS)
    lengths = sequence_lengths(U, cfg.mean_seq_len, rng)
    mix = _category_mix(cfg.domain)
    prefs = {
        "category": rng.dirichlet(_USER_ALPHA["category"] * K * mix, size=U),
        "colour": rng.dirichlet(np.full(C, _USER_ALPHA["colour"]), size=U),
        "pattern": rng.dirichlet(np.full(len(PATTERNS), _USER_ALPHA["pattern"]), size=U),
        "material": rng.dirichlet(np.full(len(MATERIALS), _USER_ALPHA["material"]), size=U),
        "style": rng.dirichlet(np.full(len(STYLES), _USER_ALPHA["style"]), size=U),
    }
    # items sorted by (category, colour): each bucket and each category is a contiguous range
    key = attrs["category"] * C + attrs["colour"]
    order = np.argsort(key, kind="stable")
    keys_sorted = key[order]
    # candidates are drawn by popularity**_PROPOSAL_POWER and reweighted by the rest, so the
    # choice follows popularity x affinity while the candidates stay diverse
    pop = attrs["popularity"]
    cum = np.concatenate([[0.0], np.cumsum(pop[order] ** _PROPOSAL_POWER)])
    cat_start = np.searchsorted(keys_sorted, np.arange(K) * C, side="left")
    cat_end = np.searchsorted(keys_sorted, np.arange(K) * C + C, side="left")
    item_pat, item_mat, item_sty = attrs["pattern"], attrs["material"], attrs["style"]

    # simulate users longest first, so the users still active at step t are a prefix
    by_len = np.argsort(-lengths, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(lengths)])[:-1][by_len]
    len_sorted = lengths[by_len]
    p = {k: v[by_len] for k, v in prefs.items()}
    cur_cat = _sample_rows(p["category"], rng)
    cur_col = _sample_rows(p["colour"], rng)
    recent = np.full((U, _NO_REPEAT), -1, dtype=np.int64)  # ring buffer of the latest items
    items = np.empty(int(lengths.sum()), dtype=np.int64)
    n_active = np.searchsorted(-len_sorted, -np.arange(int(len_sorted[0])), side="left")

    for t, a in enumerate(n_active):
        rows = np.arange(a)
        if t > 0:  # interest drifts; complementary categories follow the previous item
            moved = np.flatnonzero(rng.random(a) < cfg.drift)
            cur_cat[moved] = _sample_rows(p["category"][moved], rng)
            cur_col[moved] = _sample_rows(p["colour"][moved], rng)
            comp = rng.random(a) < cfg.complement
            prev_item = recent[:a, (t - 1) % _NO_REPEAT]
            cat = np.where(comp, COMPLEMENT[attrs["category"][prev_item]], cur_cat[:a])
        else:
            cat = cur_cat[:a].copy()
        sticky = rng.random(a) < _COLOUR_STICKINESS
        col = np.where(sticky, cur_col[:a], _sample_rows(p["colour"][:a], rng))
        # candidates: half from the (category, colour) bucket, half from the whole category,
        # each drawn by popularity**_PROPOSAL_POWER (an empty bucket falls back to the category)
        q = cat * C + col
        c_lo, c_hi = cat_start[cat], cat_end[cat]
        b_lo = np.searchsorted(keys_sorted, q, side="left")
        b_hi = np.searchsorted(keys_sorted, q, side="right")
        empty = b_lo == b_hi
        b_lo, b_hi = np.where(empty, c_lo, b_lo), np.where(empty, c_hi, b_hi)
        half = _CANDIDATES // 2
        lo = np.concatenate([np.repeat(b_lo[:, None], half, 1),
                             np.repeat(c_lo[:, None], _CANDIDATES - half, 1)], axis=1)
        hi = np.concatenate([np.repeat(b_hi[:, None], half, 1),
                             np.repeat(c_hi[:, None], _CANDIDATES - half, 1)], axis=1)
        r = cum[lo] + rng.random((a, _CANDIDATES)) * (cum[hi] - cum[lo])
        cand = order[np.clip(np.searchsorted(cum, r, side="right") - 1, lo, hi - 1)]
        # ... then one of them with probability ~ popularity x affinity (importance weights of
        # the mixture proposal): the wanted colour, and the user's taste for the pattern (image
        # only), material and style (text only)
        match = (attrs["colour"][cand] == col[:, None]) | empty[:, None]
        proposal = 0.5 * match / (cum[b_hi] - cum[b_lo])[:, None] + 0.5 / (
            cum[c_hi] - cum[c_lo])[:, None]
        affinity = (p["pattern"][rows[:, None], item_pat[cand]]
                    * p["material"][rows[:, None], item_mat[cand]]
                    * p["style"][rows[:, None], item_sty[cand]]) ** _AFFINITY_POWER
        w = (pop[cand] ** (1.0 - _PROPOSAL_POWER) * affinity
             * np.where(match, 1.0, _OFF_COLOUR) / proposal)
        repeat = (cand[:, :, None] == recent[:a, None, :]).any(axis=2)
        w = np.where(repeat & ~repeat.all(axis=1, keepdims=True), 0.0, w)
        cw = np.cumsum(w, axis=1)
        pick = np.minimum((cw < rng.random((a, 1)) * cw[:, -1:]).sum(axis=1), _CANDIDATES - 1)
        chosen = cand[rows, pick]
        items[offsets[:a] + t] = chosen
        recent[:a, t % _NO_REPEAT] = chosen

    users = np.repeat(np.arange(U, dtype=np.int64), lengths)
    gaps = 1 + np.floor(rng.exponential(_MEAN_GAP_S, size=len(items))).astype(np.int64)
    start = _T0 + rng.integers(0, 365 * 24 * 3600, size=U)
    csum = np.cumsum(gaps)
    first = np.concatenate([[0], np.cumsum(lengths)])[:-1]
    base = np.where(first > 0, csum[np.maximum(first - 1, 0)], 0)
    timestamps = start[users] + csum - np.repeat(base, lengths)
    return {"user": users, "item": items, "timestamp": timestamps}


# -- helpers ---------------------------------------------------------------------------------
def _ids(prefix: str, n: int) -> np.ndarray:
    width = len(str(max(n - 1, 0)))
    return np.asarray([f"{prefix}{i:0{width}d}" for i in range(n)], dtype=object)


def _validate(cfg: SynthConfig) -> None:
    def bad(field: str, why: str) -> ValueError:
        value = getattr(cfg, field)
        return ValueError(f"data.synth.{field}={value!r} is invalid: {why}")

    if cfg.domain not in _DOMAIN_CODE:
        raise bad("domain", f"choose one of {sorted(_DOMAIN_CODE)}")
    if cfg.n_users < 1:
        raise bad("n_users", "need at least one user")
    if cfg.n_items < 2 * len(CATEGORIES):
        raise bad("n_items", f"need at least {2 * len(CATEGORIES)} items "
                             f"(two per category on average)")
    if cfg.mean_seq_len < _MIN_SEQ_LEN:
        raise bad("mean_seq_len", f"every user has at least {_MIN_SEQ_LEN} interactions")
    if not 8 <= cfg.image_size <= 1024:
        raise bad("image_size", "use 8..1024 pixels (64 for CPU runs, 224 like the paper)")
    if cfg.popularity_alpha < 0:
        raise bad("popularity_alpha", "the Zipf exponent must be >= 0 (0 = uniform)")
    for name in ("cold_share", "drift", "complement", "text_dropout"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise bad(name, "must be a probability in [0, 1]")
    if not 0.0 <= cfg.noise <= 1.0:
        raise bad("noise", "pixel noise std as a fraction of 255, in [0, 1]")
    if cfg.images not in IMAGE_SOURCES:
        raise bad("images", f"choose one of {list(IMAGE_SOURCES)} (fashion-mnist: real garment "
                            "photos from Debian's dataset-fashion-mnist)")
