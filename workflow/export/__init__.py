"""Using a study's answer: rebuilding a trained cell's model from its checkpoint (`checkpoint`),
exporting it as TorchScript and ONNX with its preprocessing (`export`), choosing which cells to
export from the `best` table (`index`: the export index), classifying new images with it (`predict`), and checking a
`weights:` file against its model when the config loads (`weights_check`)."""
