/* The only contract between `mpq` and the dlopen'ed torch plugin
 * libmpq_torch.so. Torch-free, C linkage, plain structs: no C++ types and no
 * exceptions cross it. Bump MPQ_TORCH_PLUGIN_ABI on any change here. */
#ifndef MPQ_PLUGIN_TORCH_PLUGIN_H_
#define MPQ_PLUGIN_TORCH_PLUGIN_H_

#define MPQ_TORCH_PLUGIN_ABI 9

#ifdef __cplusplus
extern "C" {
#endif

/* A config's file and its --set overrides: for messages, and for the one
 * config mpq cannot read, the one a checkpoint records (export). */
typedef struct mpq_torch_config_args {
  const char* config;
  int num_sets;
  const char* const* sets; /* "key=value" */
} mpq_torch_config_args;

/* A list of bit-widths. */
typedef struct mpq_torch_bits {
  int count;
  const int* values;
} mpq_torch_bits;

/* A run's configuration as mpq parsed, checked and translated it: the
 * options of each part of the engine (mpq/config/options.h, whose
 * encode/decode are the only code that fills or reads this). Booleans are
 * 0/1; strings are never NULL. */
typedef struct mpq_torch_run_options {
  const char* source;
  int eval, fp_model;
  struct {
    const char *source, *dataset, *path;
    int num_classes, batch_size, workers, strict;
    double val_split, fraction;
    int seed;
  } data;
  struct {
    const char *source, *arch;
    int num_classes;
    const char* pre_trained;
    int pre_trained_strict;
    mpq_torch_bits target_bits, weight_bits, act_bits;
    const char* policy;
    int channels_last;
    const char* dtype;
    int fused_bn;
  } model;
  struct {
    double lr, min_lr, warmup_lr;
    int epochs, warmup_epochs, cooldown_epochs;
  } schedule;
  struct {
    double momentum, weight_decay, smoothing;
    int distill, freeze_weights, sync_bn, val_cycle, print_freq, checkpoint_steps;
    double dist_bucket_mb;
    const char* resume_path;
    int seed;
  } loop;
  struct {
    int bn_calib_images;
    double smoothing;
  } evaluation;
  struct {
    const char *training_device, *dist_backend;
    int dist_timeout_s, threads, seed;
    const char* cudnn;
    int tf32;
  } process;
  struct {
    const char *output_dir, *name;
    int num_best_scores;
    const char* resolved_yaml;
  } files;
} mpq_torch_run_options;

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
 * (their run in `run`), "extract" (in `extract`), "export" (in `config`,
 * `export_` and, for a config source, `run`) or "importance" (in `run` and
 * `importance`). */
typedef struct mpq_torch_request {
  int abi; /* MPQ_TORCH_PLUGIN_ABI of the caller */
  const char* command;
  const mpq_torch_run_options* run; /* NULL: export of a checkpoint (its own config) */
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
/* The LibTorch the plugin runs with, as its library reports it at run time:
 * "<version>\t<path of libtorch_cpu.so>" (either part may be empty where
 * unknown). The loader compares it with the one mpq was built against before
 * the first request: LibTorch's C++ ABI changes between releases. */
typedef const char* (*mpq_torch_libtorch_fn)(void);

#define MPQ_TORCH_ABI_SYMBOL "mpq_torch_plugin_abi"
#define MPQ_TORCH_RUN_SYMBOL "mpq_torch_plugin_run"
#define MPQ_TORCH_LIBTORCH_SYMBOL "mpq_torch_plugin_libtorch"
#define MPQ_TORCH_PLUGIN_FILE "libmpq_torch.so"
#define MPQ_TORCH_PLUGIN_ENV "MPQ_TORCH_PLUGIN"

#ifdef __cplusplus
}
#endif

#endif /* MPQ_PLUGIN_TORCH_PLUGIN_H_ */
