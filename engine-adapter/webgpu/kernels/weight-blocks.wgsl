// f16 weight matrices in the blocks layout (GpuMatrix.layout): 128 rows by 32 columns (16 words) per block, each
// block contiguous, blocks ordered by row group and then by column; rows past the matrix's last are zero. A
// tensor-core workgroup's K step reads one whole block.
const BLOCK_ROWS = 128u;
const BLOCK_WORDS = 16u;

// The index of word `word` of row `row` in a blocks-layout matrix of rowWords words per row.
fn blockWord(row: u32, word: u32, rowWords: u32) -> u32 {
  let block = (row / BLOCK_ROWS) * (rowWords / BLOCK_WORDS) + word / BLOCK_WORDS;
  return block * (BLOCK_ROWS * BLOCK_WORDS) + (row % BLOCK_ROWS) * BLOCK_WORDS + word % BLOCK_WORDS;
}
