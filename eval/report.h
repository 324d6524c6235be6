/* Evaluation reports: per-case CSV and JSON summary of mt_eval_results
 * (eval/metrics.h). Both files are written atomically: a temp file next to
 * the destination, fflush + fsync, rename over the destination, fsync of the
 * directory; on error the destination is untouched and the temp file removed.
 *
 * CSV: header
 *   case,class,label,dice,iou,hd95,asd,sensitivity,specificity,precision,npv,tp,fp,fn,tn
 * then one row per (case, class) in insertion order. Undefined values (NaN)
 * are written as "nan"; numbers with the shortest text that reads back
 * exactly. Case/class names are quoted (RFC 4180) when they hold , " or
 * a line break.
 *
 * JSON:
 *   {"n_cases": N,
 *    "metrics": ["dice", ...],
 *    "conventions": {...one-line reminders of docs/metrics.md...},
 *    "classes": [{"label": 1, "name": "anterior",
 *                 "dice": {"mean": m, "std": s, "count": c, "n_nan": k}, ...}, ...],
 *    "foreground_mean": {"dice": m, ...},   (mean of the per-class means)
 *    "cases": [{"case": "hippocampus_001",
 *               "classes": [{"label": 1, "name": "anterior", "dice": v, ...,
 *                            "tp": .., "fp": .., "fn": .., "tn": ..}, ...]}, ...]}
 * NaN is written as null.
 */
#ifndef MT_EVAL_REPORT_H
#define MT_EVAL_REPORT_H

#include "eval/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

mt_status mt_eval_write_csv(const char *path, const mt_eval_results *res);
mt_status mt_eval_write_json(const char *path, const mt_eval_results *res);
/* The same JSON with extra members right after "n_cases": extra is their
 * text without the surrounding braces, e.g. "\"weights\": \"m.safetensors\",
 * \"split\": \"dev\"" (NULL or "": none). */
mt_status mt_eval_write_json_ex(const char *path, const mt_eval_results *res, const char *extra);

#ifdef __cplusplus
}
#endif
#endif
