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
