/* ranks.c - chunks shared among the ranks of a job (see ranks.h). */
#include "ranks.h"

const comm *ranks_job(const comm *c) { return c ? c : &comm_solo; }
