"""Cost of the SWA regularizer: one distillation step with SWA against the same step without it.

Both steps distil a VGG16-BN/8 student from a VGG16-BN teacher on 227x227 images (batch 16, the
paper's VOC setting) and include everything a training step does: the teacher forward, the
student forward, the loss, the backward pass and the SGD update.  The only difference is the SWA
term (teacher gradient at the matching layer, the student's second-order map and its loss), so
the ratio is the overhead of attribution matching.  Steps of the two kinds alternate, after a
warm-up, and the medians are compared.

A second comparison leaves the teacher out (its logits and map computed once beforehand): the
student's own step with and without the SWA term, i.e. the cost of the second-order pass alone.

Run:  python benchmarks/bench_regularizer_step.py [--batch-size 16] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=227)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reg", default="swa", choices=["ewa", "swa", "sswa"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device(args.device)
    teacher = models.create("vgg16_bn", num_classes=20, input_size=args.size).to(device).eval()
    student = make_student(teacher, width_divisor=8).to(device).train()
    images = torch.randn(args.batch_size, 3, args.size, args.size, device=device)
    labels = (torch.rand(args.batch_size, 20, device=device) < 0.15).float()
    optimizer = torch.optim.SGD(student.parameters(), lr=1e-3, momentum=0.9)
    kd = DistillationLoss("multilabel")
    plain = CompressionObjective(teacher, distillation=kd)
    matched = CompressionObjective(teacher, distillation=kd, regularizer=AttributionMatchingLoss(args.reg))

    for objective in (plain, matched):  # warm-up
        _step(objective, student, optimizer, images, labels)
    times = {"kd": [], f"kd+{args.reg}": []}
    for _ in range(args.repeats):
        times["kd"].append(_step(plain, student, optimizer, images, labels))
        times[f"kd+{args.reg}"].append(_step(matched, student, optimizer, images, labels))
    regularizer = AttributionMatchingLoss(args.reg)
    taught = regularizer.teacher_pass(teacher, images)
    for reg in (None, regularizer):  # warm-up
        _student_step(student, optimizer, images, labels, kd, taught, reg)
    times["student kd"], times[f"student kd+{args.reg}"] = [], []
    for _ in range(args.repeats):
        times["student kd"].append(_student_step(student, optimizer, images, labels, kd, taught, None))
        times[f"student kd+{args.reg}"].append(
            _student_step(student, optimizer, images, labels, kd, taught, regularizer))
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratio = medians[f"kd+{args.reg}"] / medians["kd"]
    student_ratio = medians[f"student kd+{args.reg}"] / medians["student kd"]
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch_size}, {args.size}x{args.size}, "
          f"teacher VGG16-BN ({models.count_parameters(teacher):,} params), "
          f"student VGG16-BN/8 ({models.count_parameters(student):,} params)")
    for name, values in times.items():
        print(f"  {name:16s} step: median {medians[name]:.3f} s  (all: {', '.join(f'{v:.3f}' for v in values)})")
    print(f"  ratio, whole step with teacher forward, {args.reg} / plain: {ratio:.3f}  (goal <= 1.6 on CPU)")
    print(f"  ratio, student's part only, {args.reg} / plain: {student_ratio:.3f}")
    return {"medians": medians, "ratio": ratio, "student_ratio": student_ratio}


if __name__ == "__main__":
    main()
