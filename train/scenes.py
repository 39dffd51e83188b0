"""Training scenes for the face detector, composed from single-face dataset photos.

Our datasets (CelebA, FIW) hold one centred face per photo and only the main face is labelled, so scenes of the
kind users photograph — several faces of very different sizes on a background — have to be built: faces are cut
around the teacher's (MTCNN's) box with a margin, warped (scale, rotation, mirror) straight into a canvas, and
their box and 5 landmarks are carried through the same affine map. Canvases are synthetic textures, clutter and
heavily blurred patches of other photos; face-free scenes and non-face "distractor" patches teach the network that
a pasted patch is not by itself a face. Whole photos (one big face, like LFW or a badge photo) are mixed in too.

Everything is PIL/numpy on small canvases (256×256 in training) so building a batch costs a fraction of a
one-thread training step; photos are decoded on demand (the OS page cache keeps the ~200 MB of JPEGs hot).

Label conventions (same as `landmarks.csv` and `embedder.types.Face`): boxes (x1, y1, x2, y2) in canvas pixels,
landmarks (5, 2) in the order image-left eye, image-right eye, nose, image-left mouth corner, image-right mouth
corner. A mirror therefore swaps eyes and mouth corners (`FLIP_ORDER`).
"""
from __future__ import annotations

import csv
import io
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

TRAIN_SETS = ("celeba", "fiw")
FLIP_ORDER = [1, 0, 2, 4, 3]


@dataclass(frozen=True)
class FaceRecord:
    """One dataset photo with exactly one teacher-labelled face."""

    path: Path
    group: str  # CelebA identity or FIW family: the unit of the train/validation split
    box: tuple[float, float, float, float]
    landmarks: tuple[float, ...]  # 10 numbers, x0 y0 x1 y1 ...


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8
    boxes: np.ndarray  # (n, 4) float32
    landmarks: np.ndarray  # (n, 5, 2) float32


class FaceSource(Protocol):
    """Anything that can hand out a photo with one labelled face (real datasets, or drawn faces for tests)."""

    def face(self, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray, np.ndarray]: ...

    def texture(self, rng: np.random.Generator) -> Image.Image: ...


def is_validation_group(group: str, fraction: float = 0.1) -> bool:
    """Deterministic split by group hash: the same people are held out in every run and in the benchmark."""
    return zlib.crc32(group.encode()) % 1000 < fraction * 1000


def load_face_records(root: Path, split: str = "train", datasets: tuple[str, ...] = TRAIN_SETS) -> list[FaceRecord]:
    """Photos whose teacher found exactly one confident face (other faces would be unlabelled positives).

    FIW crops are tight; photos whose teacher box lies mostly outside the image are dropped, because cutting them
    out would paste half faces labelled as whole ones.
    """
    if "lfw" in datasets and split == "train":
        raise ValueError("LFW is the test set: never train on it")
    records = []
    for name in datasets:
        folder = root / name
        with open(folder / "manifest.csv", newline="") as f:
            manifest = list(csv.DictReader(f))
        with open(folder / "landmarks.csv", newline="") as f:
            marks = list(csv.DictReader(f))
        for m, row in zip(manifest, marks):
            if row["faces"] != "1" or m["path"] != row["path"]:
                continue
            group = f"{name}:{m.get('family') or m['identity']}"
            if (split == "val") != is_validation_group(group):
                continue
            box = tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2"))
            lm = tuple(float(row[f"{p}_{a}"]) for p in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
                       for a in ("x", "y"))
            records.append(FaceRecord(folder / m["path"], group, box, lm))  # type: ignore[arg-type]
    return records


def _inside_fraction(box: np.ndarray, width: int, height: int) -> float:
    x1, y1, x2, y2 = box
    iw = max(0.0, min(x2, width) - max(x1, 0))
    ih = max(0.0, min(y2, height) - max(y1, 0))
    return iw * ih / max(1e-6, (x2 - x1) * (y2 - y1))


class DatasetFaces:
    """Faces and background textures from dataset photos (CelebA + FIW)."""

    def __init__(self, records: list[FaceRecord]) -> None:
        if not records:
            raise ValueError("no face records")
        self.records = records

    def face(self, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray, np.ndarray]:
        for _ in range(10):
            rec = self.records[int(rng.integers(len(self.records)))]
            image = Image.open(rec.path).convert("RGB")
            box = np.array(rec.box, dtype=np.float64)
            if _inside_fraction(box, *image.size) >= 0.8:
                break
        return image, box, np.array(rec.landmarks, dtype=np.float64).reshape(5, 2)

    def texture(self, rng: np.random.Generator) -> Image.Image:
        """A corner of some photo (hair, clothes, background), to be enlarged and blurred beyond recognition."""
        rec = self.records[int(rng.integers(len(self.records)))]
        image = Image.open(rec.path).convert("RGB")
        w, h = image.size
        side = int(min(w, h) * rng.uniform(0.2, 0.35))
        x = 0 if rng.random() < 0.5 else w - side
        y = int(rng.uniform(0, h - side))
        return image.crop((x, y, x + side, y + side))


class DrawnFaces:
    """Cartoon faces (skin ellipse, dark eyes, nose, mouth) with exact landmarks: a data-free stand-in for tests."""

    def __init__(self, size: int = 96) -> None:
        self.size = size

    def face(self, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray, np.ndarray]:
        s = self.size
        skin = tuple(int(v) for v in rng.uniform([150, 100, 80], [240, 200, 170]))
        image = Image.new("RGB", (s, int(s * 1.2)), tuple(int(v) for v in rng.integers(0, 255, 3)))
        d = ImageDraw.Draw(image)
        box = np.array([0.15 * s, 0.2 * s, 0.85 * s, 1.0 * s])
        d.ellipse(tuple(box), fill=skin)
        lm = np.array([[0.35, 0.5], [0.65, 0.5], [0.5, 0.65], [0.38, 0.8], [0.62, 0.8]]) * s
        lm[:, 1] += 0.02 * s
        for x, y in lm[:2]:
            d.ellipse((x - 0.05 * s, y - 0.03 * s, x + 0.05 * s, y + 0.03 * s), fill=(30, 20, 20))
        d.line((lm[3, 0], lm[3, 1], lm[4, 0], lm[4, 1]), fill=(120, 30, 30), width=max(1, s // 30))
        d.polygon([(lm[2, 0], lm[2, 1] - 0.1 * s), (lm[2, 0] - 0.04 * s, lm[2, 1]), (lm[2, 0] + 0.04 * s, lm[2, 1])],
                  fill=tuple(int(0.8 * v) for v in skin))
        return image, box, lm

    def texture(self, rng: np.random.Generator) -> Image.Image:
        return Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------------- canvases

def _smooth_noise(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    cells = int(rng.integers(2, 24))
    small = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    if rng.random() < 0.5:  # mostly one hue, like walls and sky
        small = (small.mean(axis=2, keepdims=True) * rng.uniform(0.4, 1.2, 3)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


def _gradient(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
    arr = a + (b - a) * t
    return Image.fromarray(np.broadcast_to(arr, (h, w, 3)).clip(0, 255).astype(np.uint8))


def _clutter(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Shapes and lines: edges, corners and blobs, the things a weak detector mistakes for faces."""
    image = _smooth_noise(rng, w, h) if rng.random() < 0.5 else _gradient(rng, w, h)
    d = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 25))):
        x, y = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        r = rng.uniform(0.02, 0.4) * max(w, h)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(4)
        if kind == 0:
            d.rectangle((x, y, x + r, y + r * rng.uniform(0.3, 3)), fill=colour)
        elif kind == 1:
            d.ellipse((x, y, x + r, y + r * rng.uniform(0.5, 2)), fill=colour)
        elif kind == 2:
            d.line((x, y, x + rng.normal() * r, y + rng.normal() * r), fill=colour, width=int(rng.integers(1, 8)))
        else:
            pts = [(x + rng.normal() * r, y + rng.normal() * r) for _ in range(int(rng.integers(3, 7)))]
            d.polygon(pts, fill=colour)
    return image


def _photo_blur(rng: np.random.Generator, source: FaceSource, w: int, h: int) -> Image.Image:
    patch = source.texture(rng)
    if rng.random() < 0.5:
        patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = patch.resize((w, h), Image.Resampling.BICUBIC)
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(1, 4)))


def make_canvas(rng: np.random.Generator, source: FaceSource, w: int, h: int) -> Image.Image:
    """A face-free background: one of several generators, sometimes a 2×2 mosaic of them."""
    def one(cw: int, ch: int) -> Image.Image:
        kind = rng.random()
        if kind < 0.3:
            return _photo_blur(rng, source, cw, ch)
        if kind < 0.6:
            return _clutter(rng, cw, ch)
        if kind < 0.85:
            return _smooth_noise(rng, cw, ch)
        return _gradient(rng, cw, ch)

    if rng.random() < 0.2:
        image = Image.new("RGB", (w, h))
        hw, hh = w // 2, h // 2
        for x, y in ((0, 0), (hw, 0), (0, hh), (hw, hh)):
            image.paste(one(w - hw if x else hw, h - hh if y else hh), (x, y))
    else:
        image = one(w, h)
    if rng.random() < 0.3:  # fine texture (fabric, grain) on top of the smooth background
        arr = np.asarray(image, dtype=np.int16) + rng.normal(0, rng.uniform(3, 20), (h, w, 1)).astype(np.int16)
        image = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    return image


# ---------------------------------------------------------------------------------------------------- pasting

def _soft_ellipse(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """Alpha (h, w) float: 1 inside an ellipse filling the patch, fading to 0 before its edge."""
    ax, ay = rng.uniform(0.75, 1.0), rng.uniform(0.8, 1.0)
    soft = rng.uniform(0.08, 0.35)
    y = (np.arange(h) + 0.5) / h * 2 - 1
    x = (np.arange(w) + 0.5) / w * 2 - 1
    r = np.sqrt((x[None, :] / ax) ** 2 + (y[:, None] / ay) ** 2)
    return np.clip((1 - r) / soft, 0, 1)


def warp_paste(canvas: Image.Image, image: Image.Image, region: tuple[int, int, int, int], centre: np.ndarray,
               scale: float, angle: float, dest: np.ndarray, points: np.ndarray, rng: np.random.Generator,
               mask: str = "ellipse") -> np.ndarray:
    """Paste `region` of `image` into `canvas` by the similarity map p ↦ scale·R(angle)·(p − centre) + dest.

    Returns `points` (k, 2) under the same map. Shrinking is done first with an antialiased resize, so small faces
    look like small faces rather than aliased ones; the rotation is then one bilinear warp.
    """
    x0, y0, x1, y1 = region
    patch = image.convert("RGBA").crop(region)  # outside the photo: alpha 0
    pts = points - np.array([x0, y0])
    c = centre - np.array([x0, y0])
    pw, ph = patch.size
    if scale < 0.9:
        nw, nh = max(2, round(pw * scale)), max(2, round(ph * scale))
        patch = patch.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=2.0)
        f = np.array([nw / pw, nh / ph])
        pts, c, scale = pts * f, c * f, scale / float(f.mean())
        pw, ph = nw, nh
    if mask == "ellipse":
        alpha = np.asarray(patch.getchannel("A"), dtype=np.float32) * _soft_ellipse(pw, ph, rng)
        patch.putalpha(Image.fromarray(alpha.astype(np.uint8)))
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    m = np.array([[cos, -sin], [sin, cos]])
    corners = (np.array([[0, 0], [pw, 0], [0, ph], [pw, ph]]) - c) @ m.T + dest
    lo = np.floor(corners.min(axis=0)).astype(int)
    hi = np.ceil(corners.max(axis=0)).astype(int)
    size = (int(max(1, hi[0] - lo[0])), int(max(1, hi[1] - lo[1])))
    minv = np.linalg.inv(m)
    off = minv @ (lo - dest) + c
    data = (minv[0, 0], minv[0, 1], off[0], minv[1, 0], minv[1, 1], off[1])
    warped = patch.transform(size, Image.Transform.AFFINE, data=data, resample=Image.Resampling.BILINEAR)
    canvas.paste(warped.convert("RGB"), (int(lo[0]), int(lo[1])), mask=warped.getchannel("A"))
    return (pts - c) @ m.T + dest


def _mirror(image: Image.Image, box: np.ndarray, lm: np.ndarray) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    w = image.size[0]
    box = np.array([w - box[2], box[1], w - box[0], box[3]])
    lm = lm.copy()
    lm[:, 0] = w - lm[:, 0]
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), box, lm[FLIP_ORDER]


def _jitter_colour(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    arr = np.asarray(image, dtype=np.float32)
    gain = rng.uniform(1 - strength, 1 + strength, 3) * rng.uniform(1 - strength, 1 + strength)
    arr = arr * gain + rng.uniform(-40, 40) * strength
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def paste_face(canvas: Image.Image, source: FaceSource, rng: np.random.Generator, centre: np.ndarray,
               size: float, max_angle: float = 30.0, whole: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Paste one face whose box's long side becomes `size` px, centred at `centre`; returns (box, landmarks).

    The new box keeps the teacher's box shape, grown slightly with rotation (a tilted face's upright box is larger;
    full bounding-box growth would overstate it since the face is an ellipse, so we go half way)."""
    image, box, lm = source.face(rng)
    if rng.random() < 0.5:
        image, box, lm = _mirror(image, box, lm)
    if rng.random() < 0.5:
        image = _jitter_colour(image, rng, 0.15)
    bw, bh = box[2] - box[0], box[3] - box[1]
    c = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    angle = math.radians(rng.uniform(-max_angle, max_angle) if rng.random() < 0.5 else rng.normal(0, 5))
    scale = size / max(bw, bh)
    if whole:
        region = (0, 0, *image.size)
        kind = "rect"
    else:
        margin = rng.uniform(1.15, 1.7) * max(bw, bh) / 2
        region = (int(c[0] - margin), int(c[1] - margin * rng.uniform(1.0, 1.15)),
                  int(c[0] + margin), int(c[1] + margin))
        kind = "ellipse" if rng.random() < 0.8 else "rect"
    pts = warp_paste(canvas, image, region, c, scale, angle, centre, np.vstack([c[None], lm]), rng, kind)
    grow = 1 + 0.5 * (abs(math.cos(angle)) + abs(math.sin(angle)) - 1)
    nw, nh = bw * scale * grow, bh * scale * grow
    cx, cy = pts[0]
    return np.array([cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2]), pts[1:]


def _paste_distractor(canvas: Image.Image, source: FaceSource, rng: np.random.Generator) -> None:
    """A soft-edged non-face patch, so "a pasted blob" is never by itself evidence of a face."""
    w, h = canvas.size
    side = int(rng.uniform(12, 0.5 * min(w, h)))
    if rng.random() < 0.5:
        tex = source.texture(rng).resize((side, side), Image.Resampling.BILINEAR)
    else:  # skin-coloured blob
        skin = rng.uniform([150, 100, 80], [240, 200, 170])
        tex = Image.fromarray(np.broadcast_to(skin, (side, side, 3)).astype(np.uint8))
    centre = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    warp_paste(canvas, tex, (0, 0, side, side), np.array([side / 2, side / 2]), rng.uniform(0.6, 1.2),
               rng.uniform(-1, 1), centre, np.zeros((1, 2)), rng, "ellipse" if rng.random() < 0.7 else "rect")


# ---------------------------------------------------------------------------------------------------- scenes

def _finish(image: Image.Image, rng: np.random.Generator, photometric: bool) -> np.ndarray:
    """Global camera effects: exposure/contrast/colour, grayscale, blur, sensor noise, JPEG."""
    if photometric:
        if rng.random() < 0.8:
            arr = np.asarray(image, dtype=np.float32)
            mean = arr.mean()
            arr = (arr - mean) * rng.uniform(0.6, 1.4) + mean * rng.uniform(0.6, 1.4)
            arr = arr * rng.uniform(0.9, 1.1, 3)
            image = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
        if rng.random() < 0.12:
            image = image.convert("L").convert("RGB")
        if rng.random() < 0.2:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.5)))
        if rng.random() < 0.2:
            arr = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(2, 12), (image.size[1], image.size[0], 1))
            image = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
        if rng.random() < 0.3:
            buf = io.BytesIO()
            image.save(buf, "JPEG", quality=int(rng.integers(20, 90)))
            image = Image.open(buf).convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def _overlaps(box: np.ndarray, others: list[np.ndarray], limit: float) -> bool:
    for o in others:
        iw = min(box[2], o[2]) - max(box[0], o[0])
        ih = min(box[3], o[3]) - max(box[1], o[1])
        if iw > 0 and ih > 0:
            inter = iw * ih
            if inter / ((o[2] - o[0]) * (o[3] - o[1])) > limit or inter / ((box[2] - box[0]) * (box[3] - box[1])) > limit:
                return True
    return False


def compose_scene(rng: np.random.Generator, source: FaceSource, width: int = 256, height: int = 256,
                  n_faces: tuple[int, int] = (1, 8), face_size: tuple[float, float] = (12.0, 240.0),
                  p_empty: float = 0.1, p_whole: float = 0.3, photometric: bool = True) -> Scene:
    """One random scene: face-free (p_empty), one whole photo (p_whole), else 1–8 faces pasted on a canvas."""
    canvas = make_canvas(rng, source, width, height)
    boxes: list[np.ndarray] = []
    marks: list[np.ndarray] = []
    for _ in range(int(rng.integers(0, 4))):
        _paste_distractor(canvas, source, rng)
    mode = rng.random()
    short = min(width, height)
    if mode < p_empty:
        pass
    elif mode < p_empty + p_whole:
        # One big face, like a portrait, a badge photo or an LFW crop: its box is 30–100 % of the frame.
        size = short * rng.uniform(0.3, 1.0)
        jitter = (short - size) / 2 * 0.8 + 0.05 * short
        centre = np.array([width / 2, height / 2]) + rng.uniform(-jitter, jitter, 2)
        b, l = paste_face(canvas, source, rng, centre, size, max_angle=15.0, whole=True)
        boxes.append(b)
        marks.append(l)
    else:
        n = int(rng.integers(n_faces[0], n_faces[1] + 1))
        top = min(face_size[1], short * 1.1 / math.sqrt(n))  # many faces → smaller faces, or they cannot all fit
        lo = min(face_size[0], top)
        for _ in range(n):
            for _attempt in range(15):
                size = math.exp(rng.uniform(math.log(lo), math.log(top)))
                half = size / 2
                centre = np.array([rng.uniform(half * 0.6, width - half * 0.6),
                                   rng.uniform(half * 0.6, height - half * 0.6)])
                guess = np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half])
                if not _overlaps(guess, boxes, 0.25):
                    b, l = paste_face(canvas, source, rng, centre, size)
                    boxes.append(b)
                    marks.append(l)
                    break
    image = _finish(canvas, rng, photometric)
    return Scene(image, np.array(boxes, dtype=np.float32).reshape(-1, 4),
                 np.array(marks, dtype=np.float32).reshape(-1, 5, 2))


def draw_scene(scene: Scene, path: Path) -> None:
    """Scene with its labels drawn (boxes green; eyes red/blue = image-left/right; nose yellow; mouth magenta/cyan)."""
    image = Image.fromarray(scene.image).copy()
    d = ImageDraw.Draw(image)
    colours = [(255, 0, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)]
    for box, lm in zip(scene.boxes, scene.landmarks):
        d.rectangle(tuple(float(v) for v in box), outline=(0, 255, 0))
        for (x, y), col in zip(lm, colours):
            d.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=col)
    image.save(path)
