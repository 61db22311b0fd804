/* The only contract between `mpq` and the dlopen'ed torch plugin
 * libmpq_torch.so. Torch-free, C linkage, plain structs: no C++ types and no
 * exceptions cross it. Bump MPQ_TORCH_PLUGIN_ABI on any change here. */
#ifndef MPQ_PLUGIN_TORCH_PLUGIN_H_
#define MPQ_PLUGIN_TORCH_PLUGIN_H_

#define MPQ_TORCH_PLUGIN_ABI 1

#ifdef __cplusplus
extern "C" {
#endif

/* One torch subcommand to run: `command` is "pretrain", "extract",
 * "finetune" or "eval"; argv holds its arguments after the subcommand name,
 * already validated by mpq's command line. */
typedef struct mpq_torch_request {
  int abi; /* MPQ_TORCH_PLUGIN_ABI of the caller */
  const char* command;
  int argc;
  const char* const* argv;
  const char* log_level; /* spdlog level name */
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
