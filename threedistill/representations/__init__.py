"""What a run optimises: hash-grid NeRF, triplane, 3D Gaussians (with their densification strategy) and triangle
meshes, behind one interface (`Representation`), registered by name in `REPRESENTATIONS`."""

from ..registry import Registry
from .base import Representation, load_model_state
from .gaussians import Gaussians
from .mesh import Mesh
from .nerf import NeRF
from .triplane import Triplane

REPRESENTATIONS: Registry[Representation] = Registry("representation")
REPRESENTATIONS.register("nerf")(NeRF)
REPRESENTATIONS.register("gaussians")(Gaussians)
REPRESENTATIONS.register("triplane")(Triplane)
REPRESENTATIONS.register("mesh")(Mesh)

__all__ = ["REPRESENTATIONS", "Representation", "load_model_state", "Gaussians", "Mesh", "NeRF", "Triplane"]
