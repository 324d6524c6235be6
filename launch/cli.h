/* The medtrain command-line interface (launch/cli.c). */
#ifndef MT_CLI_H
#define MT_CLI_H

#ifdef __cplusplus
extern "C" {
#endif

/* Runs the CLI; returns the process exit status. */
int mt_cli_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
