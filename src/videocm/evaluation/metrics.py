"""Metrics for generated MovingDigits clips. Clips are uint8 ``(N, T, H, W, 3)`` arrays (or lists of
``(T, H, W, 3)``); each function documents what it measures."""

from __future__ import annotations

import numpy as np
from scipy import linalg
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ..data.moving_digits import COLOUR_NAMES, DIRECTIONS, parse_caption

PSNR_CAP = 100.0  # dB reported for identical clips, where PSNR is infinite


def caption_labels(prompts: list[str]) -> dict[str, np.ndarray]:
    """The judge's class indices that each caption asks for, per head."""
    parsed = [parse_caption(p) for p in prompts]
    return {
        "digit": np.array([d for d, _, _ in parsed]),
        "colour": np.array([COLOUR_NAMES.index(c) for _, c, _ in parsed]),
        "direction": np.array([DIRECTIONS.index(m) for _, _, m in parsed]),
    }


def fidelity(predictions: dict[str, np.ndarray], prompts: list[str]) -> dict[str, float]:
    """Prompt fidelity: the share of clips whose judged digit, colour and direction all match the caption
    (``all``), and the share for each alone. A clip judged to show no digit / colour / motion never matches."""
    wanted = caption_labels(prompts)
    correct = {head: predictions[head] == wanted[head] for head in wanted}
    result = {head: float(c.mean()) for head, c in correct.items()}
    result["all"] = float(np.logical_and.reduce(list(correct.values())).mean())
    return result


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N, D)`` (the FID/FVD formula,
    ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``). On judge features it is this benchmark's FVD
    analogue; it is biased upwards for small N, so compare it with a real-vs-real value of the same sizes."""
    if len(features_a) < 2 or len(features_b) < 2:
        raise ValueError("a Fréchet distance needs at least 2 clips on each side")
    mu_a, mu_b = features_a.mean(0), features_b.mean(0)
    cov_a, cov_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():  # near-singular product: regularise as the FID reference code does
        offset = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    root = np.real(root)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


def _align_shifts(reference_fft: np.ndarray, frames_fft: np.ndarray) -> list[tuple[int, int]]:
    """For each frame (its 2-D FFT in ``frames_fft`` ``(F, H, W)``), the integer (circular) shift that best lays
    it over its reference (``reference_fft``: one, or one per frame), by FFT cross-correlation."""
    correlation = np.fft.ifft2(reference_fft * np.conj(frames_fft)).real
    best = correlation.reshape(len(correlation), -1).argmax(axis=1)
    return [(int(i) // correlation.shape[2], int(i) % correlation.shape[2]) for i in best]


def clip_coherence(video: np.ndarray) -> float:
    """Temporal coherence of one clip: how constant the digit's shape stays across frames.

    Frames are turned grey (max over channels), zero-padded to twice their size, and each is shifted by the
    integer offset that best aligns it with the middle frame (undoing the motion). The score is the mean Pearson
    correlation, inside the bounding box of all aligned content, of each aligned frame with the median aligned
    frame: exactly 1.0 for a real clip (the sprite only translates), lower when the digit morphs, flickers or
    dissolves into noise, 0 for a blank clip (a blank frame scores 0).
    """
    grey = video.astype(np.float64).max(axis=-1) / 255.0
    frames, height, width = grey.shape
    padded = np.zeros((frames, 2 * height, 2 * width))
    padded[:, :height, :width] = grey
    spectra = np.fft.fft2(padded)
    shifts = _align_shifts(spectra[frames // 2], spectra)
    aligned = np.stack([np.roll(f, shift, axis=(0, 1)) for f, shift in zip(padded, shifts)])
    # Correlate inside the box that holds any content, so the zero padding does not count as agreement.
    rows, cols = np.nonzero(aligned.max(axis=0) > 0.05)
    if len(rows) == 0:
        return 0.0
    aligned = aligned[:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    median = np.median(aligned, axis=0)
    scores = []
    for frame in aligned:
        if frame.std() < 1e-8 or median.std() < 1e-8:
            scores.append(0.0)
        else:
            scores.append(float(np.corrcoef(frame.ravel(), median.ravel())[0, 1]))
    return float(np.mean(scores))


def temporal_coherence(videos) -> float:
    """Mean :func:`clip_coherence` over clips."""
    return float(np.mean([clip_coherence(v) for v in videos]))


def clip_flicker(video: np.ndarray) -> float:
    """Flicker of one clip: the mean absolute difference, in grey levels (0-255, all three channels), between
    each frame and the next after undoing the motion between them.

    Each next frame is shifted by the integer offset that best lays its grey image (max over channels, zero
    padded to twice the size, so nothing wraps around) over the frame before; the difference is averaged over
    the original frame's area. 0 for a real clip (the sprite only translates), larger when content appears,
    vanishes, changes colour or shimmers from frame to frame. Unlike :func:`clip_coherence` it is not
    normalised: a blank clip has no flicker (0), so read it beside coherence and fidelity.
    """
    frames, height, width, _ = video.shape
    if frames < 2:
        return 0.0
    padded = np.zeros((frames, 2 * height, 2 * width, video.shape[-1]))
    padded[:, :height, :width] = video.astype(np.float64)
    grey = padded.max(axis=-1)
    spectra = np.fft.fft2(grey)
    differences = []
    for t, shift in enumerate(_align_shifts(spectra[:-1], spectra[1:])):
        aligned = np.roll(padded[t + 1], shift, axis=(0, 1))
        differences.append(np.abs(aligned - padded[t]).sum() / (height * width * video.shape[-1]))
    return float(np.mean(differences))


def temporal_flicker(videos) -> float:
    """Mean :func:`clip_flicker` over clips."""
    return float(np.mean([clip_flicker(v) for v in videos]))


def clip_psnr(clip: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB over the whole clip (capped at ``PSNR_CAP`` for identical clips)."""
    if np.array_equal(clip, reference):
        return PSNR_CAP
    return min(PSNR_CAP, float(peak_signal_noise_ratio(reference, clip, data_range=255)))


def clip_ssim(clip: np.ndarray, reference: np.ndarray) -> float:
    """SSIM (Wang et al. 2004, scikit-image, 7x7 window) per frame over RGB, averaged over frames."""
    return float(np.mean([
        structural_similarity(reference[t], clip[t], channel_axis=-1, data_range=255) for t in range(len(clip))
    ]))


def teacher_agreement(student_clips, teacher_clips) -> dict:
    """Agreement of a student with the teacher: mean PSNR and SSIM of each student clip against the teacher's
    many-step clip for the same prompt and the same initial noise (pairs in the same order), and the PSNR of each
    pair (``psnr_per_clip``, for intervals)."""
    if len(student_clips) != len(teacher_clips):
        raise ValueError(f"{len(student_clips)} student clips but {len(teacher_clips)} teacher clips")
    psnr = np.array([clip_psnr(s, t) for s, t in zip(student_clips, teacher_clips)])
    return {
        "psnr": float(psnr.mean()),
        "ssim": float(np.mean([clip_ssim(s, t) for s, t in zip(student_clips, teacher_clips)])),
        "psnr_per_clip": psnr,
    }
