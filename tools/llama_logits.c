// The logits llama.cpp computes after a token sequence, for comparing ggufq's runtime with it.
//
//   R=~/.cache/ggufq-ref/llama.cpp
//   gcc -O2 tools/llama_logits.c -I$R/include -I$R/ggml/include -L$R/build/bin -lllama -lggml -lggml-base \
//       -Wl,-rpath,$R/build/bin -o /tmp/llama_logits
//   NPROMPT=5 /tmp/llama_logits MODEL.gguf OUT.f32 ID1 ID2 ...
//
// The first NPROMPT ids are decoded as one batch (as llama-completion does with a prompt), the rest one
// at a time (as generated tokens are); OUT.f32 gets the last position's logits, float32[n_vocab].
// Context 512, 2 threads, llama.cpp's other defaults.
#include "llama.h"
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char ** argv) {
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model * model = llama_model_load_from_file(argv[1], mp);
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512; cp.n_threads = 2; cp.n_threads_batch = 2;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    int n = argc - 3;
    llama_token * toks = malloc(sizeof(llama_token) * n);
    for (int i = 0; i < n; i++) toks[i] = atoi(argv[3 + i]);
    int n_prompt = atoi(getenv("NPROMPT") ? getenv("NPROMPT") : "0");
    if (n_prompt <= 0 || n_prompt > n) n_prompt = n;
    if (llama_decode(ctx, llama_batch_get_one(toks, n_prompt))) return 1;
    for (int i = n_prompt; i < n; i++) if (llama_decode(ctx, llama_batch_get_one(toks + i, 1))) return 1;
    const float * lg = llama_get_logits_ith(ctx, -1);
    int nv = llama_vocab_n_tokens(llama_model_get_vocab(model));
    FILE * f = fopen(argv[2], "wb"); fwrite(lg, sizeof(float), nv, f); fclose(f);
    return 0;
}
