"""Cost of the SWA regularizer: one distillation step with SWA against the same step without it.

Both steps distil a VGG16-BN/8 student from a VGG16-BN teacher on 227x227 images (batch 16, the
paper's VOC setting) and include everything a training step does: the teacher forward, the
student forward, the loss, the backward pass and the SGD update.  The only difference is the SWA
term (teacher gradient at the matching layer, the student's second-order map and its loss), so
the ratio is the overhead of attribution matching.  Steps of the two kinds alternate, after a
warm-up, and the medians are compared.  A check confirms that the regularized objective leaves the
KD and task terms as they are (it only adds its own).

A second comparison leaves the teacher out (its logits and map computed once beforehand): the
student's own step with and without the SWA term, i.e. the cost of the second-order pass alone.

Run:  python benchmarks/bench_regularizer_step.py [--batch-size 16] [--repeats 5] [--regularizer swa] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from _common import Measurement, PeakMemory, format_bytes, resolve_device

from apkit import models
from apkit.compression import CompressionObjective, DistillationLoss, make_student
from apkit.regularizers import AttributionMatchingLoss


def _step(objective, student, optimizer, images, labels) -> float:
    began = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss, _ = objective(student, images, labels)
    loss.backward()
    optimizer.step()
    if images.device.type == "cuda":
        torch.cuda.synchronize(images.device)
    return time.perf_counter() - began


def _student_step(student, optimizer, images, labels, kd, taught, regularizer) -> float:
    began = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    if regularizer is None:
        logits = student(images)
        loss, _ = kd(logits, taught.logits, labels)
    else:
        logits, student_map = regularizer.student_pass(student, images, taught.target)
        loss = kd(logits, taught.logits, labels)[0] + regularizer(student_map, taught.map)
    loss.backward()
    optimizer.step()
    if images.device.type == "cuda":
        torch.cuda.synchronize(images.device)
    return time.perf_counter() - began


def _same_terms(student, plain, matched, images, labels) -> tuple[bool, str]:
    """The regularized objective adds its term and changes nothing else: equal KD and task terms."""
    state = copy.deepcopy(student.state_dict())
    terms = []
    for objective in (plain, matched):
        torch.manual_seed(1)  # the same dropout mask in both student forwards
        objective(student, images, labels)
        terms.append({k: float(v) for k, v in objective.last_terms.items()})
    student.load_state_dict(state)
    differences = {k: abs(terms[0][k] - terms[1][k]) for k in terms[0]}
    equal = set(terms[1]) == set(terms[0]) | {"match"} and max(differences.values()) <= 1e-6
    shown = ", ".join(f"{k} {v:.1e}" for k, v in differences.items())
    return equal, f"KD and task terms equal with and without the regularizer (differences {shown})"


def measure(*, teacher: str = "vgg16_bn", width_divisor: int = 8, batch_size: int = 16, size: int = 227,
            classes: int = 20, repeats: int = 5, reg: str = "swa",
            device: torch.device | str = "cpu") -> list[Measurement]:
    """A KD step with the regularizer against the same step without it, and the student's part alone.

    Steps of the two kinds alternate after a warm-up; each side reports its median step time
    (``apkit_s``: with the regularizer, ``baseline_s``: without) and the peak memory of one step.
    """
    device = torch.device(device)
    torch.manual_seed(0)
    options = {"input_size": size} if teacher.startswith("vgg") else {}
    teacher_net = models.create(teacher, num_classes=classes, **options).to(device).eval()
    student = make_student(teacher_net, width_divisor=width_divisor).to(device).train()
    images = torch.randn(batch_size, 3, size, size, device=device)
    labels = (torch.rand(batch_size, classes, device=device) < 0.15).float()
    optimizer = torch.optim.SGD(student.parameters(), lr=1e-3, momentum=0.9)
    kd = DistillationLoss("multilabel")
    plain = CompressionObjective(teacher_net, distillation=kd)
    matched = CompressionObjective(teacher_net, distillation=kd, regularizer=AttributionMatchingLoss(reg))
    equal, check = _same_terms(student, plain, matched, images, labels)

    def step(objective):
        return _step(objective, student, optimizer, images, labels)

    regularizer = AttributionMatchingLoss(reg)
    taught = regularizer.teacher_pass(teacher_net, images)

    def student_step(r):
        return _student_step(student, optimizer, images, labels, kd, taught, r)

    times: dict[str, list[float]] = {"kd": [], f"kd+{reg}": [], "student kd": [], f"student kd+{reg}": []}
    peaks: dict[str, int | None] = {}
    sides = {"kd": lambda: step(plain), f"kd+{reg}": lambda: step(matched),
             "student kd": lambda: student_step(None), f"student kd+{reg}": lambda: student_step(regularizer)}
    for name, run in sides.items():  # warm-up, and the memory of one step
        run()
        with PeakMemory(device) as memory:
            run()
        peaks[name] = memory.peak
    for _ in range(repeats):
        for name, run in sides.items():
            times[name].append(run())
    medians = {k: statistics.median(v) for k, v in times.items()}
    shape = (f"{teacher} -> {teacher}/{width_divisor} at {size}x{size}, batch {batch_size} "
             f"({models.count_parameters(teacher_net):,} -> {models.count_parameters(student):,} params)")
    common = {"equal": equal, "check": check, "device": str(device), "repeats": repeats}
    return [
        Measurement(name="regularizer-step", operation=f"KD training step with {reg.upper()}, {shape}",
                    apkit=f"KD + {reg.upper()} step (teacher forward shared)", baseline="plain KD step",
                    apkit_s=medians[f"kd+{reg}"], baseline_s=medians["kd"], apkit_peak=peaks[f"kd+{reg}"],
                    baseline_peak=peaks["kd"], extra={"times": times}, **common),
        Measurement(name="regularizer-student", operation=f"student's part of the step, {shape}",
                    apkit=f"student forward + second-order {reg.upper()} map + backward",
                    baseline="student forward + backward", apkit_s=medians[f"student kd+{reg}"],
                    baseline_s=medians["student kd"], apkit_peak=peaks[f"student kd+{reg}"],
                    baseline_peak=peaks["student kd"], **common),
    ]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=227)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--regularizer", dest="reg", default="swa", choices=["ewa", "swa", "sswa"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    rows = measure(batch_size=args.batch_size, size=args.size, repeats=args.repeats, reg=args.reg, device=device)
    print(f"device {device}, threads {torch.get_num_threads()}, {rows[0].operation}")
    for name, values in rows[0].extra["times"].items():
        print(f"  {name:16s} step: median {statistics.median(values):.3f} s  "
              f"(all: {', '.join(f'{v:.3f}' for v in values)})")
    ratio, student_ratio = 1 / rows[0].ratio, 1 / rows[1].ratio
    print(f"  ratio, whole step with teacher forward, {args.reg} / plain: {ratio:.3f}  (goal <= 1.6 on CPU)")
    print(f"  ratio, student's part only, {args.reg} / plain: {student_ratio:.3f}")
    print(f"  peak memory of one step: {format_bytes(rows[0].apkit_peak)} with {args.reg}, "
          f"{format_bytes(rows[0].baseline_peak)} without")
    print(f"  check: {'passed' if rows[0].equal else 'FAILED'} - {rows[0].check}")
    medians = {k: statistics.median(v) for k, v in rows[0].extra["times"].items()}
    return {"medians": medians, "ratio": ratio, "student_ratio": student_ratio}


if __name__ == "__main__":
    main()
