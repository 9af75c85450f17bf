"""The peer `versa-bench --scenario external --peer mlserver` measures against:
an MLServer inference runtime that runs an ONNX file with ONNX Runtime.

versa-bench writes this file next to a generated `model-settings.json`
(`"implementation": "onnx_runtime.OnnxRuntime"`) whose `parameters.uri` is
the same `model.onnx` versa-server serves, and whose `parameters.extra` may
set `intra_op_threads` (default 1) and `inter_op_threads` (default 1).

Requests are V2 (KServe) inference requests: every input is decoded with
MLServer's NumPy codec (JSON `data` or gRPC `raw_input_contents`) and fed
to the session under its own name; every output of the model is answered,
FP32, in the encoding MLServer picks for the protocol (raw bytes over gRPC
when the request used them, a flat JSON list over REST).
"""

import numpy as np
import onnxruntime as ort

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        uri = await get_model_uri(self._settings)
        extra = {}
        if self._settings.parameters is not None and self._settings.parameters.extra:
            extra = self._settings.parameters.extra
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(extra.get("intra_op_threads", 1))
        options.inter_op_num_threads = int(extra.get("inter_op_threads", 1))
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            uri, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {
            i.name: NumpyCodec.decode_input(i).astype(np.float32, copy=False)
            for i in payload.inputs
        }
        results = self._session.run(self._outputs, feeds)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[
                NumpyCodec.encode_output(name, value)
                for name, value in zip(self._outputs, results)
            ],
        )
