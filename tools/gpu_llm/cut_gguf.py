"""SmolLM2's GGUF cut to its first N blocks (exact quantized data copied), for a device machine whose
upload limit is below the whole file; plus sha256 of the dequantized tensors the CPU cache holds."""
import hashlib, json, sys
import gguf
import numpy as np
from safetensors.numpy import load_file

src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = gguf.GGUFReader(src)
w = gguf.GGUFWriter(dst, arch="llama")
for field in r.fields.values():
    if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
        continue
    vt = field.types[0]
    sub = field.types[-1] if vt == gguf.GGUFValueType.ARRAY else None
    val = n if field.name == "llama.block_count" else field.contents()
    w.add_key_value(field.name, val, vt, sub_type=sub)
keep = [t for t in r.tensors if not t.name.startswith("blk.") or int(t.name.split(".")[1]) < n]
for t in keep:
    w.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_ti_data_to_file()
for t in keep:
    w.write_tensor_data(t.data, tensor_endianess=r.endianess)
w.close()
# digests of the CPU cache's float32 tensors the cut model must reproduce
state = load_file(sys.argv[4] + "/model.safetensors")
digests = {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest() for k, v in state.items()
           if not k.startswith("model.layers.") or int(k.split(".")[2]) < n}
json.dump(digests, open(sys.argv[5], "w"), indent=0, sort_keys=True)
print(len(keep), "tensors;", len(digests), "digests")
