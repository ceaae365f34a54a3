"""The RMAD-Crypto fusion model (torch): conditional GAN, multi-domain VAE with KDE, Transformer-clustering,
adaptive risk fusion. Public API: RMADConfig, RMAD, fit, Trained; export in models.export."""

from models.rmad.config import ABLATIONS, RMADConfig
from models.rmad.model import INPUT_NAMES, OUTPUT_NAMES, RMAD
from models.rmad.train import Trained, fit

__all__ = ["ABLATIONS", "INPUT_NAMES", "OUTPUT_NAMES", "RMAD", "RMADConfig", "Trained", "fit"]
