"""Build Mistral-7B-v0.1's real tokenizer as a Hugging Face folder, offline.

    python -m fcmistral.artifacts.mistral_tokenizer [--output artifacts/mistral-tokenizer]

The sentencepiece model of Mistral-7B-v0.1 ships inside the ``mistral-common`` package
(``mistral_common/data/tokenizer.model.v1``, checked by its sha256). Transformers' own conversion
is not used, for reasons found on transformers 5.23 (each checked by the tests against
sentencepiece itself):

- ``LlamaTokenizerFast(vocab_file=...)`` silently builds a 3-token tokenizer;
- the default conversion disagrees with sentencepiece on leading or repeated spaces (a Metaspace
  pre-tokenizer splits where sentencepiece does not); sentencepiece's own behaviour is a
  ``Prepend("▁")`` + ``Replace(" ", "▁")`` normalizer with no pre-tokenizer, and BPE merges
  ordered by the score of the merged piece;
- a ``tokenizer_config.json`` naming ``LlamaTokenizer`` makes ``AutoTokenizer`` put the Metaspace
  pre-tokenizer back, so the folder names ``TokenizersBackend``; and ``add_bos_token`` must be set
  or BOS is dropped.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

from fcmistral.chat_template import add_chat_template
from fcmistral.errors import UserError
from fcmistral.outputs import check_output_dir, written_aside

log = logging.getLogger(__name__)

SENTENCEPIECE_FILE = "tokenizer.model.v1"
SENTENCEPIECE_SHA256 = "dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055"
DEFAULT_OUTPUT = Path("artifacts/mistral-tokenizer")
# sentencepiece piece types (sentencepiece_model.proto): the ones that take part in BPE merges.
_NORMAL, _USER_DEFINED = 1, 4


def sentencepiece_model_path() -> Path:
    """Mistral-7B-v0.1's sentencepiece model from the installed ``mistral-common`` package."""
    spec = importlib.util.find_spec("mistral_common")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the mistral-common package is not installed (pip install mistral-common==1.13.1)")
    path = Path(spec.submodule_search_locations[0], "data", SENTENCEPIECE_FILE)
    if not path.is_file():
        raise UserError(f"{path} is missing: this mistral-common does not ship Mistral-7B-v0.1's tokenizer")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SENTENCEPIECE_SHA256:
        raise UserError(f"{path} is not Mistral-7B-v0.1's tokenizer (sha256 {digest})")
    return path


def _read_bpe_model(model_file: Path):
    """The sentencepiece model proto, refused unless it is byte-fallback BPE (as Mistral's is)."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    if proto.trainer_spec.model_type != 2 or not proto.trainer_spec.byte_fallback:  # 2: BPE
        raise UserError(f"{model_file} is not a byte-fallback BPE sentencepiece model")
    return proto


def build_tokenizer(model_file: Path) -> Tokenizer:
    """A ``tokenizers`` BPE that encodes exactly as sentencepiece does with ``model_file``."""
    proto = _read_bpe_model(model_file)
    vocab = {piece.piece: index for index, piece in enumerate(proto.pieces)}
    # Every way to split a piece into two pieces is a merge, ranked by the merged piece's score
    # (sentencepiece applies the highest-scoring merge first); ties keep the ids' order.
    merges = []
    for piece in proto.pieces:
        if piece.type not in (_NORMAL, _USER_DEFINED) or len(piece.piece) < 2:
            continue
        splits = [(piece.piece[:i], piece.piece[i:]) for i in range(1, len(piece.piece))
                  if piece.piece[:i] in vocab and piece.piece[i:] in vocab]
        merges += [(left, right, piece.score) for left, right in sorted(splits, key=lambda s: (vocab[s[0]], vocab[s[1]]))]
    merges.sort(key=lambda merge: merge[2], reverse=True)
    unk = proto.pieces[proto.trainer_spec.unk_id].piece
    tokenizer = Tokenizer(models.BPE(vocab, [(left, right) for left, right, _ in merges], unk_token=unk,
                                     fuse_unk=True, byte_fallback=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.pre_tokenizer = None
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                           decoders.Strip(" ", 1, 0)])
    specials = [proto.pieces[i].piece for i in (proto.trainer_spec.unk_id, proto.trainer_spec.bos_id,
                                                proto.trainer_spec.eos_id)]
    tokenizer.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    bos = specials[1]
    tokenizer.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                             special_tokens=[(bos, vocab[bos])])
    return tokenizer


def build_mistral_tokenizer(output: Path = DEFAULT_OUTPUT, model_file: Path | None = None) -> Path:
    """Write the Hugging Face tokenizer folder (``AutoTokenizer`` loads it) and return its path."""
    from transformers import PreTrainedTokenizerFast

    model_file = model_file or sentencepiece_model_path()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(model_file), bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        add_bos_token=True, add_eos_token=False, clean_up_tokenization_spaces=False, model_max_length=32768,
    )
    add_chat_template(tokenizer)  # the glaive format this project teaches (Mistral-7B-v0.1 has no template)
    with written_aside(output) as staging:
        tokenizer.save_pretrained(staging)
        config_file = staging / "tokenizer_config.json"
        config = json.loads(config_file.read_text())
        config["tokenizer_class"] = "TokenizersBackend"  # not LlamaTokenizer: see the module docstring
        config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    log.info("Mistral-7B-v0.1 tokenizer (%d pieces) written to %s", len(tokenizer), output)
    return Path(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an --output folder that already holds files")
    args = parser.parse_args()
    check_output_dir(args.output, "--output", args.overwrite, "pass --overwrite to replace it")
    build_mistral_tokenizer(args.output)


if __name__ == "__main__":
    from fcmistral.cli import run_cli

    run_cli(main)
