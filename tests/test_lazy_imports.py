"""The deferred diffusers packages of the `videocm` command: one model class without its package's others, and
every name of the package still there when asked for."""

import subprocess
import sys

CODE = """
import sys
from videocm.models.lazy_imports import defer_package_inits, DeferredPackage
defer_package_inits()
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
package = sys.modules["diffusers.models.transformers"]
assert isinstance(package, DeferredPackage)
assert "diffusers.models.transformers.transformer_flux" not in sys.modules, "the package's other classes loaded"
assert "diffusers.models.transformers.transformer_wan" in sys.modules
from diffusers.models.transformers import FluxTransformer2DModel  # asked for: the real __init__ runs
from diffusers import CogVideoXTransformer3DModel, UNet3DConditionModel, AutoencoderKLCogVideoX
import diffusers.models.transformers as transformers
assert transformers.WanTransformer3DModel is WanTransformer3DModel
assert FluxTransformer2DModel.__module__ == "diffusers.models.transformers.transformer_flux"
defer_package_inits()  # again: nothing changes
assert sys.modules["diffusers.models.transformers"] is package
print("ok")
"""


def test_deferred_packages_import_one_class_and_still_give_every_name():
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
