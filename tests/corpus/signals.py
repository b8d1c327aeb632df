"""Realistic inputs made here, not random noise: drawn scenes and faces, rendered text lines, speech-like audio and
its mel spectrogram, and real files' bytes.

Text and shapes are drawn with Pillow's ImageDraw and its default font when Pillow is installed; without it, glyph-
like strokes are drawn with numpy, so the inputs keep the structure (edges, strokes, dark-on-light lines) that the
models were trained on. Audio is a glottal pulse train with a moving pitch, shaped by vowel formants and a syllable
envelope with pauses, at the model's sample rate.
"""

from __future__ import annotations

import io

import numpy as np

try:  # Pillow is optional: the numpy fallbacks below draw the same kinds of pictures
    from PIL import Image, ImageDraw, ImageFont
except ImportError:  # pragma: no cover - the venv has Pillow
    Image = ImageDraw = ImageFont = None  # type: ignore[assignment]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _font(size: int):  # noqa: ANN202 - a Pillow font
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _strokes(height: int, width: int, text: str, rng: np.random.Generator) -> np.ndarray:
    """Dark glyph-like strokes (one box of bars and arcs per character) on a light page, as uint8 [H, W]."""
    page = np.full((height, width), 235, np.uint8)
    cell = max(4, width // max(len(text), 1))
    yy, xx = np.mgrid[0:height, 0:cell]
    for i, ch in enumerate(text):
        if ch == " ":
            continue
        code = ord(ch)
        glyph = np.zeros((height, cell), bool)
        top, bottom = height // 5, height - height // 5
        glyph |= (np.abs(xx - cell // 4) <= 1) & (yy >= top) & (yy <= bottom)  # a stem
        if code % 2:
            glyph |= (np.abs(yy - (top + bottom) // 2) <= 1) & (xx >= cell // 4) & (xx <= 3 * cell // 4)
        if code % 3:
            r = (bottom - top) / 3
            glyph |= np.abs(np.hypot(yy - (top + r), xx - cell / 2) - r) <= 1.2  # a bowl
        x0 = i * cell
        if x0 + cell > width:
            break
        page[:, x0:x0 + cell][glyph] = rng.integers(10, 60)
    return page


def text_line(text: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A text line, dark ink on light paper, as uint8 RGB [H, W, 3]."""
    if Image is None:
        gray = _strokes(height, width, text, rng)
        return np.repeat(gray[..., None], 3, axis=2)
    img = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(220, 250, 3)))
    draw = ImageDraw.Draw(img)
    font = _font(int(height * 0.7))
    draw.text((int(height * 0.15), int(height * 0.1)), text, fill=tuple(int(v) for v in rng.integers(0, 50, 3)),
              font=font)
    return np.asarray(img)


def document(height: int, width: int, lines: list[str], rng: np.random.Generator) -> np.ndarray:
    """A page with several text lines at different sizes and a ruled box, uint8 RGB [H, W, 3]."""
    if Image is None:
        page = np.full((height, width, 3), 240, np.uint8)
        y = height // 10
        for line in lines:
            h = max(12, height // (2 * len(lines) + 2))
            page[y:y + h, width // 12:width // 12 + width * 3 // 4] = text_line(line, h, width * 3 // 4, rng)
            y += 2 * h
        return page
    img = Image.new("RGB", (width, height), (243, 241, 236))
    draw = ImageDraw.Draw(img)
    y = height // 12
    for i, line in enumerate(lines):
        size = int(height / (len(lines) * 2.2)) if i == 0 else int(height / (len(lines) * 3))
        draw.text((width // 14, y), line, fill=(20, 20, 28), font=_font(size))
        y += int(size * 1.8)
    draw.rectangle((width // 20, height * 3 // 4, width - width // 20, height - height // 20), outline=(40, 40, 40),
                   width=2)
    return np.asarray(img)


def captcha(text: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A captcha-like picture: coloured characters at jittered positions and noise lines, uint8 gray [H, W]."""
    if Image is None:
        return _strokes(height, width, text, rng)
    img = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(200, 255, 3)))
    draw = ImageDraw.Draw(img)
    step = width // (len(text) + 1)
    for i, ch in enumerate(text):
        draw.text((step // 2 + i * step + int(rng.integers(-3, 4)), int(rng.integers(2, height // 4))), ch,
                  fill=tuple(int(v) for v in rng.integers(0, 120, 3)), font=_font(int(height * 0.6)))
    for _ in range(4):
        draw.line([tuple(int(v) for v in (rng.integers(0, width), rng.integers(0, height))) for _ in range(2)],
                  fill=tuple(int(v) for v in rng.integers(60, 200, 3)), width=1)
    return np.asarray(img.convert("L"))


def scene(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Sky, ground, a house, a sun and two standing figures, uint8 RGB [H, W, 3]."""
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.zeros((height, width, 3), np.float32)
    horizon = int(height * 0.6)
    img[:horizon] = np.array([110, 160, 230]) * (0.8 + 0.2 * yy[:horizon, :, None] / horizon)
    img[horizon:] = [70, 130, 60]
    img += rng.normal(0, 4, img.shape)
    sun = np.hypot(yy - height * 0.15, xx - width * 0.8) < height * 0.08
    img[sun] = [250, 220, 90]
    x0, x1, y0 = int(width * 0.1), int(width * 0.4), int(height * 0.35)
    img[y0:horizon, x0:x1] = [180, 90, 60]
    roof = (yy < y0) & (yy > y0 - (x1 - x0) // 2) & (np.abs(xx - (x0 + x1) / 2) < (yy - y0 + (x1 - x0) / 2))
    img[roof] = [120, 40, 40]
    img[y0 + 10:y0 + 30, x0 + 10:x0 + 30] = [200, 220, 240]
    for cx in (0.55, 0.68):  # figures: a head and a body
        c = int(width * cx)
        head = np.hypot(yy - height * 0.42, xx - c) < height * 0.045
        body = (np.abs(xx - c) < width * 0.04) & (yy > height * 0.47) & (yy < height * 0.8)
        img[body] = [40, 60, 150]
        img[head] = [225, 185, 160]
    return np.clip(img, 0, 255).astype(np.uint8)


def face(size: int, mood: str, rng: np.random.Generator) -> np.ndarray:
    """A frontal face (oval, eyes, brows, nose, mouth shaped by `mood`), uint8 gray [size, size]."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.full((size, size), 60.0) + rng.normal(0, 3, (size, size))
    img[((yy - 0.5) / 0.42) ** 2 + ((xx - 0.5) / 0.33) ** 2 < 1] = 175
    for ex in (0.36, 0.64):
        img[((yy - 0.42) / 0.04) ** 2 + ((xx - ex) / 0.07) ** 2 < 1] = 40
        tilt = {"angry": 0.06, "sad": -0.06}.get(mood, 0.0) * (1 if ex < 0.5 else -1)
        brow = (np.abs(yy - (0.33 + tilt * (xx - ex) / 0.08)) < 0.015) & (np.abs(xx - ex) < 0.08)
        img[brow] = 30
    img[(np.abs(xx - 0.5) < 0.02) & (yy > 0.45) & (yy < 0.6)] = 140
    curve = {"happy": 0.08, "sad": -0.06, "surprise": 0.0}.get(mood, 0.01)
    mouth_y = 0.72 + curve * ((xx - 0.5) / 0.15) ** 2 - curve
    if mood == "surprise":
        img[((yy - 0.72) / 0.06) ** 2 + ((xx - 0.5) / 0.05) ** 2 < 1] = 30
    else:
        img[(np.abs(yy - mouth_y) < 0.02) & (np.abs(xx - 0.5) < 0.15)] = 40
    return np.clip(img, 0, 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """`rgb` encoded as a PNG file (Pillow), or as a binary PPM without Pillow."""
    if Image is None:
        h, w, _ = rgb.shape
        return f"P6 {w} {h} 255\n".encode() + rgb.tobytes()
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def resize(gray_or_rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize (Pillow) or nearest-neighbour (numpy) of a uint8 picture."""
    if Image is not None:
        return np.asarray(Image.fromarray(gray_or_rgb).resize((width, height), Image.BILINEAR))
    rows = np.arange(height) * gray_or_rgb.shape[0] // height
    cols = np.arange(width) * gray_or_rgb.shape[1] // width
    return gray_or_rgb[rows][:, cols]


def speech(seconds: float, rate: int, rng: np.random.Generator, f0: float = 130.0) -> np.ndarray:
    """Speech-like audio in [-1, 1], float32: voiced syllables (pitch contour, vowel formants) at ~4 per second,
    separated by pauses with room noise."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    pitch = f0 * (1 + 0.15 * np.sin(2 * np.pi * 0.7 * t) + 0.05 * np.sin(2 * np.pi * 3.1 * t))
    phase = np.cumsum(pitch / rate)
    pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)  # one glottal pulse per period
    spectrum = np.fft.rfft(pulses)
    freqs = np.fft.rfftfreq(n, 1 / rate)
    envelope = np.zeros_like(freqs)
    for formant, bandwidth, gain in ((700, 130, 1.0), (1220, 160, 0.6), (2600, 250, 0.25)):
        envelope += gain / (1 + ((freqs - formant) / bandwidth) ** 2)
    voiced = np.fft.irfft(spectrum * envelope * np.exp(-freqs / 4000), n)
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t - 0.5) * 1.6, 0, 1) ** 1.5
    syllables *= (np.sin(2 * np.pi * 0.45 * t) > -0.6)  # pauses between phrases
    audio = voiced * syllables
    audio = audio / (np.abs(audio).max() + 1e-9) * 0.6 + rng.normal(0, 0.003, n)
    return audio.astype(np.float32)


def tone(seconds: float, rate: int, frequency: float) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def _mel_filters(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-style triangular mel filters [n_mels, n_fft // 2 + 1] (librosa's default mel basis)."""
    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, np.float64)
        return np.where(f < 1000, f * 3 / 200, 15 + 27 * np.log(np.maximum(f, 1e-9) / 1000) / np.log(6.4))

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return np.where(m < 15, m * 200 / 3, 1000 * np.exp(np.log(6.4) * (m - 15) / 27))

    freqs = np.fft.rfftfreq(n_fft, 1 / rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(0), hz_to_mel(rate / 2), n_mels + 2))
    lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - freqs[None, :]) / (edges[2:] - edges[1:-1])[:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def mel_frames(audio: np.ndarray, rate: int, n_fft: int, hop: int, n_mels: int) -> np.ndarray:
    """Power mel spectrogram frames [T, n_mels] (a Hann window, centred frames), float32."""
    padded = np.pad(audio, n_fft // 2, mode="reflect")
    count = 1 + (len(padded) - n_fft) // hop
    frames = np.stack([padded[i * hop:i * hop + n_fft] for i in range(count)]) * np.hanning(n_fft + 1)[:-1]
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    return (power @ _mel_filters(rate, n_fft, n_mels).T).astype(np.float32)


def nchw(rgb: np.ndarray, mean: np.ndarray | float, std: np.ndarray | float, bgr: bool = False) -> np.ndarray:
    """uint8 [H, W, 3] -> normalised float32 [3, H, W]."""
    x = rgb[..., ::-1] if bgr else rgb
    x = (x.astype(np.float32) / 255.0 - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)
