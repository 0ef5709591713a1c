"""The torch-free core every other part builds on: result and data paths (`paths`), the model
catalogue's facts (`catalogue`, `backbones`) and the typed cell and its training settings (`cell`).
Imports only the standard library."""
