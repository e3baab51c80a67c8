"""File names Berunda derives from the ones the user gives (no heavy imports: QGIS's side
uses them too)."""
import os


def checkpoint_path_for(model_path: str) -> str:
    """<model>.checkpoint.pt beside the model: what RESUME continues from."""
    root, ext = os.path.splitext(model_path)
    return f"{root}.checkpoint{ext or '.pt'}"
