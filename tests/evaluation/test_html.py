"""report.html opens in a real browser: headless Chromium renders it with its tables and figures."""

import shutil
import subprocess

import pytest
import torch
from PIL import Image

from apkit import audit, models
from apkit.data import SyntheticShapes

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)),
               None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    torch.manual_seed(0)
    seg = SyntheticShapes("seg", num_samples=16, image_size=32)
    teacher = models.create("vgg_small", num_classes=8, input_size=32, width_divisor=4).eval()
    student = models.create("vgg_small", num_classes=8, input_size=32, width_divisor=8)
    for model in (teacher, student):  # every class predicted: pairs are kept, figures have content
        model.classifier[1].bias.data.fill_(3.0)
    report = audit(teacher, {"small": student}, seg, attribution_methods=["gradcam"], resamples=100, device="cpu",
                   progress=False)
    out = tmp_path_factory.mktemp("html")
    report.save(out)
    return out / "report.html"


def test_page_is_self_contained(page):
    text = page.read_text(encoding="utf-8")
    # The changed pairs, the cosine histogram and the deletion and insertion curves.
    assert text.count("<table") >= 5 and text.count("data:image/png;base64,") == 3
    assert "src=\"http" not in text and "<script" not in text and "<link" not in text


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine (Debian: apt-get install chromium)")
def test_chromium_renders_the_tables_and_a_figure(page, tmp_path):
    profile = tmp_path / "profile"
    dom = subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Each student against the teacher" in dom.stdout and dom.stdout.count("<table") >= 5
    assert dom.stdout.count("<img") >= 1
    shot = tmp_path / "report.png"
    subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={profile}", "--window-size=1200,2400",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    picture = Image.open(shot).convert("L")
    low, high = picture.getextrema()
    colours = sum(1 for count in picture.histogram() if count)
    assert high - low > 100 and colours > 20, "the screenshot is blank"


class _Named(torch.utils.data.TensorDataset):
    """Single-label ``(image, int)`` items without masks, with file and class names as a folder dataset has them."""

    classes = ("circle", "square", "triangle")

    def __init__(self, images, labels):
        super().__init__(images, labels)
        self.sample_names = [f"{self.classes[int(y)]}/photo_{i:02d}.jpg" for i, y in enumerate(labels)]


@pytest.fixture(scope="module")
def named_page(tmp_path_factory):
    import copy

    torch.manual_seed(1)
    teacher = models.create("vgg_small", num_classes=3, input_size=32, width_divisor=4).eval()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.add_(0.2 * parameter.std().nan_to_num() * torch.randn_like(parameter))
    data = _Named(torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    report = audit(teacher, {"pruned": student}, data, attribution_methods=["gradcam", "excitation"], resamples=50,
                   faithfulness_steps=4, road_percentages=(0.5,), device="cpu", progress=False,
                   gates=["agreement=1.01", "cos=-1"])
    out = tmp_path_factory.mktemp("named")
    report.save(out)
    return out / "report.html", data


def test_the_page_has_a_verdict_and_every_methods_figure_labelled_by_file_and_class(named_page):
    page, data = named_page
    text = page.read_text(encoding="utf-8")
    verdict = text[text.index("id='verdict'"):text.index("</section>")]
    # cos is judged per method: three checks in all
    assert "FAILED: 2 of 3 gate checks passed" in verdict and "failed</span> agreement=1.01" in verdict
    assert "passed</span> cos=-1" in verdict and "<b>pruned</b> against the teacher: Δ top1" in verdict
    assert "agreement" in verdict and "Δ deletion" in verdict
    # Per method a figure, then the cosine histogram and the curves.
    assert text.count("data:image/png;base64,") == 4
    assert "Grad-CAM: the pairs whose maps changed most (rows: file: explained class" in text
    assert "the pairs whose maps changed most" in text.split("Grad-CAM: the pairs", 1)[1]  # the second method's
    assert any(name in text for name in data.sample_names)  # the most-changed pairs' table names the files


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine (Debian: apt-get install chromium)")
def test_chromium_shows_the_verdict_file_names_and_class_names(named_page, tmp_path):
    page, data = named_page
    dom = subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = dom.stdout
    assert "Verdict" in rendered and "FAILED" in rendered and "agreement=1.01" in rendered
    assert rendered.index("Verdict") < rendered.index("<table")  # at the top
    shown = [name for name in data.sample_names if name in rendered]
    assert shown, "no file name in the rendered page"
    assert any(f"{name.split('/')[0]}" in rendered for name in shown) and "circle" in rendered
