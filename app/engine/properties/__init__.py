"""Property prediction: crystal graphs, CGCNN and the eight-property predictor."""
