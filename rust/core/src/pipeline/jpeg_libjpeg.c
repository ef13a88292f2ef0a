/*
 * One JPEG decoded by libjpeg-turbo (built by mozjpeg-sys) with the settings Pillow uses, so
 * the evaluation pipeline sees the pixels open_clip and CLIP_benchmark see.
 *
 * This lives in C because libjpeg reports a fatal error by calling error_exit, which must not
 * return. The only non-returning exit that neither ends the process (the default handler calls
 * exit()) nor unwinds a Rust panic through C frames is longjmp, and a longjmp may only land in
 * a C frame that is still live: this function's setjmp. Nothing crosses back to Rust but a
 * status code and a message.
 */
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "jpeglib.h"
#include "jerror.h"

/* Status codes; mirrored in jpeg_libjpeg.rs. */
#define LIGHTCLIP_JPEG_OK 0
#define LIGHTCLIP_JPEG_CORRUPT 1
#define LIGHTCLIP_JPEG_REFUSED 2 /* the output callback said no (size limit, memory) */

/* Gives a buffer of width * height * 3 bytes for the picture, or NULL to refuse it. */
typedef unsigned char *(*lightclip_output_fn)(void *context, unsigned int width,
                                              unsigned int height);

struct error_jump {
    struct jpeg_error_mgr manager; /* first, so a j_common_ptr's err casts to this */
    jmp_buf jump;
    char *message;
};

static void jump_out(j_common_ptr cinfo) {
    struct error_jump *err = (struct error_jump *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

/* Pillow ignores libjpeg's warnings ("extraneous bytes before marker" and the like decode as
 * they are), but it refuses a file that ends early, which libjpeg's memory source would
 * otherwise pad with an end marker and grey blocks. */
static void warn_or_jump(j_common_ptr cinfo, int msg_level) {
    if (msg_level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
        jump_out(cinfo);
    }
}

struct scan_limit {
    struct jpeg_progress_mgr manager; /* first, so cinfo->progress casts to this */
    unsigned int max_scans;
};

/* A progressive file may repeat scans without end, each costing a pass over the whole
 * picture: a small file could take minutes. libjpeg calls this between input steps, before
 * any pixel comes out. */
static void check_scan_count(j_common_ptr cinfo) {
    j_decompress_ptr dinfo = (j_decompress_ptr)cinfo;
    struct scan_limit *limit = (struct scan_limit *)cinfo->progress;
    if (dinfo->input_scan_number > 0 && (unsigned int)dinfo->input_scan_number > limit->max_scans) {
        struct error_jump *err = (struct error_jump *)cinfo->err;
        snprintf(err->message, JMSG_LENGTH_MAX,
                 "more than %u scans (possible decompression bomb)", limit->max_scans);
        longjmp(err->jump, 1);
    }
}

/* Pillow reads every four-channel JPEG as inverted CMYK (Adobe's convention, which is what
 * writers follow), then takes each of R, G, B as (255 - ink) * (255 - K) / 255, rounded. */
static void inverted_cmyk_to_rgb(const JSAMPLE *cmyk, JSAMPLE *rgb, JDIMENSION width) {
    JDIMENSION x;
    for (x = 0; x < width; x++, cmyk += 4, rgb += 3) {
        unsigned int white = cmyk[3]; /* inverted K: 255 - K */
        int c;
        for (c = 0; c < 3; c++) {
            rgb[c] = (JSAMPLE)((cmyk[c] * white + 127) / 255);
        }
    }
}

int lightclip_jpeg_decode_rgb(const unsigned char *data, unsigned long size,
                              unsigned int max_scans, lightclip_output_fn output, void *context,
                              char message[JMSG_LENGTH_MAX]) {
    struct jpeg_decompress_struct cinfo;
    struct error_jump err;
    struct scan_limit limit;
    unsigned char *pixels;
    size_t stride;
    int four_channels;

    message[0] = '\0';
    cinfo.err = jpeg_std_error(&err.manager);
    err.manager.error_exit = jump_out;
    err.manager.emit_message = warn_or_jump;
    err.message = message;
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return LIGHTCLIP_JPEG_CORRUPT;
    }
    jpeg_create_decompress(&cinfo);
    limit.manager.progress_monitor = check_scan_count;
    limit.max_scans = max_scans;
    cinfo.progress = &limit.manager;
    jpeg_mem_src(&cinfo, data, size);
    jpeg_read_header(&cinfo, TRUE);
    /* Pillow's decoder outside draft mode: libjpeg's defaults, written out because they are
     * the point (accurate integer IDCT, fancy chroma upsampling, full size); RGB out, or CMYK
     * for four-channel files, which libjpeg cannot turn into RGB and Pillow converts itself. */
    four_channels = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    cinfo.out_color_space = four_channels ? JCS_CMYK : JCS_RGB;
    cinfo.dct_method = JDCT_ISLOW;
    cinfo.do_fancy_upsampling = TRUE;
    cinfo.scale_num = 1;
    cinfo.scale_denom = 1;
    pixels = output(context, cinfo.image_width, cinfo.image_height);
    if (pixels == NULL) {
        jpeg_destroy_decompress(&cinfo);
        return LIGHTCLIP_JPEG_REFUSED;
    }
    jpeg_start_decompress(&cinfo);
    if (cinfo.output_width != cinfo.image_width || cinfo.output_height != cinfo.image_height ||
        cinfo.output_components != (four_channels ? 4 : 3)) {
        snprintf(message, JMSG_LENGTH_MAX, "decoder gave %ux%u with %d components",
                 cinfo.output_width, cinfo.output_height, cinfo.output_components);
        jpeg_destroy_decompress(&cinfo);
        return LIGHTCLIP_JPEG_CORRUPT;
    }
    stride = (size_t)cinfo.output_width * 3;
    if (four_channels) {
        /* Freed with cinfo, on every path out. */
        JSAMPARRAY cmyk = (*cinfo.mem->alloc_sarray)((j_common_ptr)&cinfo, JPOOL_IMAGE,
                                                     cinfo.output_width * 4, 1);
        while (cinfo.output_scanline < cinfo.output_height) {
            JSAMPROW row = pixels + (size_t)cinfo.output_scanline * stride;
            jpeg_read_scanlines(&cinfo, cmyk, 1);
            inverted_cmyk_to_rgb(cmyk[0], row, cinfo.output_width);
        }
    } else {
        while (cinfo.output_scanline < cinfo.output_height) {
            JSAMPROW row = pixels + (size_t)cinfo.output_scanline * stride;
            jpeg_read_scanlines(&cinfo, &row, 1);
        }
    }
    /* Not jpeg_finish_decompress: what follows the last scanline (the end marker, trailing
     * bytes) cannot change the picture, so a file whose pixels are all there is accepted. */
    jpeg_destroy_decompress(&cinfo);
    return LIGHTCLIP_JPEG_OK;
}
