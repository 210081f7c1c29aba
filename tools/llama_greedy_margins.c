// llama.cpp's greedy continuation of a prompt, with the top-2 logit margin at every step: the margin says
// how close a step is to a tie that float32 summation order alone can flip.
//
//   R=~/.cache/ggufq-ref/llama.cpp
//   gcc -O2 tools/llama_greedy_margins.c -I$R/include -I$R/ggml/include -L$R/build/bin -lllama -lggml \
//       -lggml-base -Wl,-rpath,$R/build/bin -o /tmp/llama_greedy_margins
//   /tmp/llama_greedy_margins MODEL.gguf N_PREDICT PROMPT      (prompt escapes already processed)
// Prints one line per generated token: "<id> <margin>". Context 512, 2 threads, llama.cpp's defaults
// otherwise (the prompt decoded as one batch, then one token at a time, as llama-completion does).
#include "llama.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static void quiet(enum ggml_log_level level, const char * text, void * data) { (void) level; (void) text; (void) data; }

int main(int argc, char ** argv) {
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512; cp.n_threads = 2; cp.n_threads_batch = 2;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    const struct llama_vocab * vocab = llama_model_get_vocab(model);
    int n_predict = atoi(argv[2]);
    const char * prompt = argv[3];
    llama_token toks[1024];
    int n = llama_tokenize(vocab, prompt, strlen(prompt), toks, 1024, true, true);
    if (n < 0 || llama_decode(ctx, llama_batch_get_one(toks, n))) return 1;
    int nv = llama_vocab_n_tokens(vocab);
    for (int step = 0; step < n_predict; step++) {
        const float * lg = llama_get_logits_ith(ctx, -1);
        int a = 0, b = -1;
        for (int i = 1; i < nv; i++) {
            if (lg[i] > lg[a]) { b = a; a = i; } else if (b < 0 || lg[i] > lg[b]) b = i;
        }
        printf("%d %.6f\n", a, lg[a] - lg[b]);
        if (llama_vocab_is_eog(vocab, a)) break;
        llama_token t = a;
        if (llama_decode(ctx, llama_batch_get_one(&t, 1))) return 1;
    }
    return 0;
}
