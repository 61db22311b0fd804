/* The only contract between `mpq` and the dlopen'ed torch plugin
 * libmpq_torch.so. Torch-free, C linkage, plain structs: no C++ types and no
 * exceptions cross it. Bump MPQ_TORCH_PLUGIN_ABI on any change here. */
#ifndef MPQ_PLUGIN_TORCH_PLUGIN_H_
#define MPQ_PLUGIN_TORCH_PLUGIN_H_

#define MPQ_TORCH_PLUGIN_ABI 4

#ifdef __cplusplus
extern "C" {
#endif

/* mpq pretrain|finetune|eval CONFIG [--set key=value]...: the config file
 * and its overrides, already checked by mpq's command line. */
typedef struct mpq_torch_config_args {
  const char* config;
  int num_sets;
  const char* const* sets; /* "key=value" */
} mpq_torch_config_args;

/* mpq extract CKPT -o OUT [--b BITS...] [--input-size N]. */
typedef struct mpq_torch_extract_args {
  const char* checkpoint;
  const char* output;
  int num_bits;    /* 0: the checkpoint's own record of its candidates */
  const int* bits; /* candidate bit-widths in the order of training */
  int input_size;  /* 0: the checkpoint's record, else the model's default */
} mpq_torch_extract_args;

/* mpq export SOURCE -o OUT [--opset N] [--reference DIR] [--set key=value]...:
 * SOURCE and the overrides travel in the request's `config`. */
typedef struct mpq_torch_export_args {
  const char* output;
  int opset;
  const char* reference_dir; /* NULL or "": none */
} mpq_torch_export_args;

/* mpq importance CONFIG -o OUT [--batches N] [--set key=value]...: CONFIG and
 * the overrides travel in the request's `config`. */
typedef struct mpq_torch_importance_args {
  const char* output;
  int batches; /* calibration batches of the training split */
} mpq_torch_importance_args;

/* One torch subcommand to run: `command` is "pretrain", "finetune", "eval"
 * (their arguments in `config`), "extract" (in `extract`), "export" (in
 * `config` and `export_`) or "importance" (in `config` and `importance`). */
typedef struct mpq_torch_request {
  int abi; /* MPQ_TORCH_PLUGIN_ABI of the caller */
  const char* command;
  mpq_torch_config_args config;
  mpq_torch_extract_args extract;
  mpq_torch_export_args export_;
  mpq_torch_importance_args importance;
} mpq_torch_request;

typedef struct mpq_torch_response {
  int exit_code;      /* the process exit code (README: 0 ok, 1 runtime, 2 usage/config) */
  char error[4096];   /* one line, empty on success */
} mpq_torch_response;

/* Returns MPQ_TORCH_PLUGIN_ABI of the plugin. */
typedef int (*mpq_torch_abi_fn)(void);
/* Runs a request; never throws; returns response->exit_code. */
typedef int (*mpq_torch_run_fn)(const mpq_torch_request* request, mpq_torch_response* response);

#define MPQ_TORCH_ABI_SYMBOL "mpq_torch_plugin_abi"
#define MPQ_TORCH_RUN_SYMBOL "mpq_torch_plugin_run"
#define MPQ_TORCH_PLUGIN_FILE "libmpq_torch.so"
#define MPQ_TORCH_PLUGIN_ENV "MPQ_TORCH_PLUGIN"

#ifdef __cplusplus
}
#endif

#endif /* MPQ_PLUGIN_TORCH_PLUGIN_H_ */
