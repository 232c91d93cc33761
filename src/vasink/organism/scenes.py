"""Seeded synthetic scenes and questions for the organism.

    >>> from vasink.organism import scenes
    >>> scene = scenes.sample("test", 1, seed=0)[0]
    >>> scene.image.size, [(o.color, o.shape) for o in scene.objects]
    >>> scene.questions[0]           # (question, answer, family)

A scene is a 64x64 RGB image: a pale, lightly textured background and 1-4 objects (a shape in a
saturated colour, 12-22 px). Most of the image is background, so background patches are the natural
"nothing to read here" targets for attention.

Shapes play the part of COCO's object categories: they have unequal frequencies (for POPE's "popular"
negatives) and co-occurring partners (for its "adversarial" negatives).

Question families (the third element of each question tuple):

- ``existence-random``, ``existence-popular``, ``existence-adversarial``: "is there a <shape> in the
  image ?" -> yes/no. Each family has one positive (a shape in the scene) and one negative drawn the
  POPE way: a random absent shape, the most frequent absent shape, the absent shape that co-occurs most
  with those present.
- ``attribute``: "what color is the <shape> ?" -> a colour (asked only of shapes present once).
- ``counting``: "how many objects are there ?" -> one/two/three/four.
- ``spatial``: "is the <shape> left of the <shape> ?" / "... above ..." -> yes/no (only when the two
  centres differ by at least 8 px along that axis, so the answer is unambiguous).
- ``caption``: "describe the image ." -> "a red circle and a blue square ." (objects left to right);
  :func:`caption_objects` reads the shapes a caption mentions, to score it CHAIR-style.

Splits draw from disjoint seed streams: the RNG of ``sample(split, n, seed)`` is seeded with
``(SPLIT_IDS[split], seed)``, so no two splits ever share a generator state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring", "star", "bar")
# Relative frequency of each shape as a scene object (POPE "popular" = most frequent absent shape).
SHAPE_WEIGHTS = (0.22, 0.18, 0.15, 0.12, 0.10, 0.09, 0.08, 0.06)
# Shapes that tend to appear together (POPE "adversarial" negatives are drawn from these).
PARTNERS = {
    "circle": "ring", "ring": "circle",
    "square": "diamond", "diamond": "square",
    "triangle": "star", "star": "triangle",
    "cross": "bar", "bar": "cross",
}
COLORS = {
    "red": (210, 30, 30), "green": (30, 160, 40), "blue": (30, 60, 210), "yellow": (235, 200, 20),
    "purple": (130, 40, 170), "orange": (240, 120, 10), "black": (20, 20, 20), "white": (250, 250, 250),
}
BACKGROUNDS = ((200, 200, 200), (215, 200, 170), (175, 195, 215), (185, 210, 180), (205, 185, 195))
NUMBER_WORDS = ("zero", "one", "two", "three", "four")
SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
FAMILIES = ("existence-random", "existence-popular", "existence-adversarial", "attribute", "counting",
            "spatial", "caption")
CAPTION_QUESTION = "describe the image ."


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) in pixels, x1/y1 exclusive

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


@dataclass
class Scene:
    image: Image.Image
    objects: list[SceneObject]
    questions: list[tuple[str, str, str]] = field(default_factory=list)
    background: tuple[int, int, int] = (0, 0, 0)
    object_mask: np.ndarray | None = None  # (H, W) bool: pixel belongs to an object

    def description(self) -> str:
        """The scene in words (objects left to right with coarse positions): the text-only stage's stand-in
        for the image."""
        parts = []
        for obj in sorted(self.objects, key=lambda o: o.center[0]):
            cx, cy = obj.center
            col = "left" if cx < IMAGE_SIZE / 3 else "right" if cx > 2 * IMAGE_SIZE / 3 else "center"
            row = "top" if cy < IMAGE_SIZE / 3 else "bottom" if cy > 2 * IMAGE_SIZE / 3 else "middle"
            parts.append(f"a {obj.color} {obj.shape} at the {row} {col}")
        return " , ".join(parts) + " ."


def sample(split: str, n: int, seed: int = 0) -> list[Scene]:
    """``n`` scenes of ``split`` ("train", "validation", "test"), the same for the same ``seed``."""
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_IDS)}")
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    rng = np.random.default_rng([SPLIT_IDS[split], int(seed)])
    return [make_scene(rng) for _ in range(n)]


def make_scene(rng: np.random.Generator) -> Scene:
    n_objects = int(rng.integers(1, 5))
    shapes = _draw_shapes(rng, n_objects)
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    pixels = _background(rng, background)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    mask_image = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    mask_draw = ImageDraw.Draw(mask_image)
    objects: list[SceneObject] = []
    used_colors: set[str] = set()
    for shape in shapes:
        color = _draw_color(rng, used_colors)
        used_colors.add(color)
        box = _place(rng, [o.box for o in objects])
        if box is None:
            continue
        _draw_shape(draw, shape, box, COLORS[color])
        _draw_shape(mask_draw, shape, box, 255)
        objects.append(SceneObject(shape, color, box))
    scene = Scene(image, objects, background=background, object_mask=np.asarray(mask_image) > 0)
    scene.questions = make_questions(rng, scene)
    return scene


def make_questions(rng: np.random.Generator, scene: Scene) -> list[tuple[str, str, str]]:
    present = {o.shape for o in scene.objects}
    absent = [s for s in SHAPES if s not in present]
    out: list[tuple[str, str, str]] = []
    for family in ("existence-random", "existence-popular", "existence-adversarial"):
        positive = scene.objects[int(rng.integers(len(scene.objects)))].shape
        out.append((_exists(positive), "yes", family))
        negative = _negative(rng, family, present, absent)
        out.append((_exists(negative), "no", family))
    counts = {s: sum(o.shape == s for o in scene.objects) for s in present}
    single = [o for o in scene.objects if counts[o.shape] == 1]
    if single:
        obj = single[int(rng.integers(len(single)))]
        out.append((f"what color is the {obj.shape} ?", obj.color, "attribute"))
    out.append(("how many objects are there ?", NUMBER_WORDS[len(scene.objects)], "counting"))
    out.extend(_spatial(rng, single))
    out.append((CAPTION_QUESTION, caption(scene), "caption"))
    return out


def caption(scene: Scene) -> str:
    names = [f"a {o.color} {o.shape}" for o in sorted(scene.objects, key=lambda o: o.center[0])]
    if len(names) == 1:
        return names[0] + " ."
    return " , ".join(names[:-1]) + " and " + names[-1] + " ."


def told(scene: Scene) -> str:
    """The scene told as text, as a line before a question: "The image shows a red circle and a blue square ."
    (training dialogues with ``caption_context``, and ``measure.text_binding``)."""
    return f"The image shows {caption(scene)}"


def caption_objects(text: str) -> list[str]:
    """Shapes mentioned in a caption, in order (for CHAIR-style scoring against ``scene.objects``)."""
    return [w for w in text.replace(".", " ").replace(",", " ").split() if w in SHAPES]


def _exists(shape: str) -> str:
    return f"is there a {shape} in the image ?"


def _negative(rng, family: str, present: set[str], absent: list[str]) -> str:
    if family == "existence-random":
        return absent[int(rng.integers(len(absent)))]
    if family == "existence-popular":  # SHAPES is in decreasing frequency
        return absent[0]
    partners = [PARTNERS[s] for s in sorted(present) if PARTNERS[s] in absent]
    if partners:
        return partners[int(rng.integers(len(partners)))]
    return absent[0]


def _spatial(rng, single: list[SceneObject]) -> list[tuple[str, str, str]]:
    pairs = [(a, b) for a in single for b in single if a is not b]
    if not pairs:
        return []
    out = []
    for axis, word in ((0, "left of"), (1, "above")):
        usable = [(a, b) for a, b in pairs if abs(a.center[axis] - b.center[axis]) >= 8]
        if usable:
            a, b = usable[int(rng.integers(len(usable)))]
            answer = "yes" if a.center[axis] < b.center[axis] else "no"
            out.append((f"is the {a.shape} {word} the {b.shape} ?", answer, "spatial"))
    return out


def _draw_shapes(rng, n: int) -> list[str]:
    weights = np.array(SHAPE_WEIGHTS) / sum(SHAPE_WEIGHTS)
    shapes = [SHAPES[int(rng.choice(len(SHAPES), p=weights))]]
    while len(shapes) < n:
        if rng.random() < 0.4:  # co-occurrence: bring the partner of a shape already there
            shapes.append(PARTNERS[shapes[int(rng.integers(len(shapes)))]])
        else:
            shapes.append(SHAPES[int(rng.choice(len(SHAPES), p=weights))])
    return shapes


def _draw_color(rng, used: set[str]) -> str:
    names = [c for c in COLORS if c not in used]
    return names[int(rng.integers(len(names)))]


def _background(rng, rgb) -> np.ndarray:
    # Plain colour, a faint gradient and +-4 levels of noise: "lightly textured".
    base = np.array(rgb, dtype=np.float32)
    ramp = np.linspace(-1.0, 1.0, IMAGE_SIZE, dtype=np.float32)
    direction = rng.normal(size=2).astype(np.float32)
    gradient = 6.0 * (direction[0] * ramp[None, :] + direction[1] * ramp[:, None])
    noise = rng.integers(-4, 5, size=(IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    pixels = base[None, None, :] + gradient[:, :, None] + noise
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _place(rng, taken: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int] | None:
    for _ in range(50):
        size = int(rng.integers(12, 23))
        x0 = int(rng.integers(1, IMAGE_SIZE - size - 1))
        y0 = int(rng.integers(1, IMAGE_SIZE - size - 1))
        box = (x0, y0, x0 + size, y0 + size)
        if all(_apart(box, t, margin=2) for t in taken):
            return box
    return None


def _apart(a, b, margin: int) -> bool:
    return a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box, fill) -> None:
    x0, y0, x1, y1 = box[0], box[1], box[2] - 1, box[3] - 1
    cx, cy, w = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif shape == "ring":
        draw.ellipse((x0, y0, x1, y1), outline=fill, width=max(2, w // 5))
    elif shape == "square":
        draw.rectangle((x0 + 1, y0 + 1, x1 - 1, y1 - 1), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif shape == "cross":
        t = max(2, w // 4)
        draw.rectangle((cx - t / 2, y0, cx + t / 2, y1), fill=fill)
        draw.rectangle((x0, cy - t / 2, x1, cy + t / 2), fill=fill)
    elif shape == "star":
        pts = []
        for k in range(10):
            r = w / 2 if k % 2 == 0 else w / 5
            ang = -np.pi / 2 + k * np.pi / 5
            pts.append((cx + r * np.cos(ang), cy + r * np.sin(ang)))
        draw.polygon(pts, fill=fill)
    elif shape == "bar":
        draw.rectangle((x0, cy - w / 6, x1, cy + w / 6), fill=fill)
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(f"unknown shape {shape!r}")
