/**
 * A SentencePiece vocabulary of a GGUF file (`tokenizer.ggml.model` = "llama": Llama 2, TinyLlama,
 * Mistral) as a Hugging Face `tokenizer.json`, the way Hugging Face writes these vocabularies for
 * `LlamaTokenizerFast`: a BPE model with byte fallback whose merges come from the pieces' scores,
 * a normalizer that puts "▁" in front and for every space, and decoders that turn "▁" back into
 * spaces, `<0xNN>` pieces into bytes, and drop the one space put in front.
 *
 * llama.cpp's SentencePiece tokenizer (`llm_tokenizer_spm` in `llama-vocab.cpp`) starts from the
 * text's characters and repeatedly joins the adjacent pair whose joined text is the piece of
 * highest score; a character that is no piece becomes its UTF-8 byte pieces. A BPE model whose
 * merge list holds every split of every piece into two pieces, ordered by the joined piece's
 * score (highest first), makes the same joins in the same order, so the ids are the same; only
 * between different pieces of equal score may the two orders differ (llama.cpp takes the
 * leftmost pair, the merge list its own order), which SentencePiece BPE vocabularies, whose
 * scores are distinct, do not have.
 */

/** "▁" (U+2581), SentencePiece's space. */
export const SPM_SPACE = '\u2581';

/** A SentencePiece vocabulary as `tokenizer.ggml.*` holds it. */
export interface SpmVocabulary {
  /** `tokenizer.ggml.tokens`: the piece of each id. */
  tokens: readonly string[];
  /** `tokenizer.ggml.scores`: each piece's score (higher joins first). */
  scores: ArrayLike<number>;
  /** The unknown piece's id (`tokenizer.ggml.unknown_token_id`), or null. */
  unknownId: number | null;
  /** `tokenizer.ggml.add_space_prefix` (true unless the file says false): "▁" before the text. */
  addSpacePrefix: boolean;
  /** The `added_tokens` entries (control, unknown and user-defined pieces). */
  addedTokens: readonly unknown[];
}

/**
 * Every split of a piece into two pieces, as `[left, right]` merges, ordered by the joined
 * piece's score (highest first; a stable sort keeps the id order among equal scores).
 */
export function spmMerges(tokens: readonly string[], scores: ArrayLike<number>): Array<[string, string]> {
  const known = new Set(tokens);
  const found: Array<{ pair: [string, string]; score: number }> = [];
  tokens.forEach((piece, id) => {
    const chars = Array.from(piece);
    for (let cut = 1; cut < chars.length; cut++) {
      const left = chars.slice(0, cut).join('');
      const right = chars.slice(cut).join('');
      if (known.has(left) && known.has(right)) found.push({ pair: [left, right], score: scores[id] });
    }
  });
  found.sort((a, b) => b.score - a.score);
  return found.map((m) => m.pair);
}

/** The `tokenizer.json` object of a SentencePiece vocabulary (see the module comment). */
export function spmTokenizerJson(vocabulary: SpmVocabulary): unknown {
  const { tokens, scores, unknownId, addSpacePrefix, addedTokens } = vocabulary;
  const vocab: Record<string, number> = {};
  tokens.forEach((t, id) => {
    vocab[t] = id;
  });
  const spaces = { type: 'Replace', pattern: { String: ' ' }, content: SPM_SPACE };
  return {
    version: '1.0',
    added_tokens: addedTokens,
    normalizer: addSpacePrefix ? { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: SPM_SPACE }, spaces] } : spaces,
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: SPM_SPACE }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        ...(addSpacePrefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: unknownId === null ? null : tokens[unknownId],
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges: spmMerges(tokens, scores),
    },
  };
}
