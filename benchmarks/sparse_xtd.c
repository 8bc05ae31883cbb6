/* A measurement, not a kernel of the engine: the first layer's weight gradient x^T d computed from the
   non-zero entries of d only, in both layouts of the weight. benchmarks/grad_sparsity.py compiles this
   file with the machine's C compiler and times it against XLA's dense GEMM on a real d. */
#include <stdlib.h>
#include <string.h>
/* out[I][H] = sum_b x[b][i] * d[b][h], visiting only the non-zero entries of d.
   Tiles of 16 inputs: each active (b, h) adds d[b][h] * x[b][i0:i0+16] into a [H][16] tile, then the
   tile is written transposed into out's rows i0..i0+15. The sum over b runs in b order. */
void sparse_xtd(const float* x, const float* d, float* out, int B, int I, int H) {
  int* idx = (int*)malloc(sizeof(int) * (size_t)B * H);
  float* val = (float*)malloc(sizeof(float) * (size_t)B * H);
  int* cnt = (int*)malloc(sizeof(int) * B);
  for (int b = 0; b < B; ++b) {
    int c = 0;
    for (int h = 0; h < H; ++h) {
      float v = d[(size_t)b * H + h];
      if (v != 0.0f) { idx[(size_t)b * H + c] = h; val[(size_t)b * H + c] = v; ++c; }
    }
    cnt[b] = c;
  }
  float* tile = (float*)aligned_alloc(64, sizeof(float) * 16 * (size_t)H);
  for (int i0 = 0; i0 < I; i0 += 16) {
    int w = I - i0 < 16 ? I - i0 : 16;
    memset(tile, 0, sizeof(float) * 16 * (size_t)H);
    for (int b = 0; b < B; ++b) {
      float xb[16] = {0};
      for (int r = 0; r < w; ++r) xb[r] = x[(size_t)b * I + i0 + r];
      const int* ib = idx + (size_t)b * H; const float* vb = val + (size_t)b * H;
      for (int k = 0; k < cnt[b]; ++k) {
        float* t = tile + 16 * (size_t)ib[k]; float v = vb[k];
        for (int r = 0; r < 16; ++r) t[r] += v * xb[r];
      }
    }
    for (int r = 0; r < w; ++r) {
      float* o = out + (size_t)(i0 + r) * H;
      for (int h = 0; h < H; ++h) o[h] = tile[16 * (size_t)h + r];
    }
  }
  free(tile); free(idx); free(val); free(cnt);
}

/* outT[H][I] = (x^T d)^T: each active (b, h) adds d[b][h] * x[b][:] to row h (contiguous). Rows no example
   touches are zeroed, the others written by their first contribution and accumulated after. */
void sparse_xtd_t(const float* restrict x, const float* restrict d, float* restrict outT, int B, int I, int H) {
  unsigned char* seen = (unsigned char*)calloc(H, 1);
  for (int b = 0; b < B; ++b) {
    const float* restrict xb = x + (size_t)b * I;
    const float* restrict db = d + (size_t)b * H;
    for (int h = 0; h < H; ++h) {
      float v = db[h];
      if (v == 0.0f) continue;
      float* restrict o = outT + (size_t)h * I;
      if (!seen[h]) { seen[h] = 1; for (int i = 0; i < I; ++i) o[i] = v * xb[i]; }
      else { for (int i = 0; i < I; ++i) o[i] += v * xb[i]; }
    }
  }
  for (int h = 0; h < H; ++h) if (!seen[h]) memset(outT + (size_t)h * I, 0, sizeof(float) * I);
  free(seen);
}
