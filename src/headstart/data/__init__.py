"""Data sets: image folders, tables, built-in sets, seeded stratified splits."""

from .base import Examples, Splits
from .builtin import BuiltinDataset, get_builtin, install_builtin, list_builtin, load_builtin
from .files import read_image_folder, read_table
from .images import IMAGE_EXTENSIONS, check_images, open_image
from .load import load_data
from .split import stratified_split, stratified_subset

__all__ = [
    "IMAGE_EXTENSIONS",
    "BuiltinDataset",
    "Examples",
    "Splits",
    "check_images",
    "get_builtin",
    "install_builtin",
    "list_builtin",
    "load_builtin",
    "load_data",
    "open_image",
    "read_image_folder",
    "read_table",
    "stratified_split",
    "stratified_subset",
]
