/*
 * Runs the AVR firmware in simavr with UART0 on a pseudo-terminal, for the tests.
 * Prints "PTY <slave path>" once the port is up, then "OUT <channel> <level> <ms>" at each
 * change of an output pin (ms of simulated time), and simulates until killed.
 * Build: make sim (needs libsimavr-dev). Usage: uart_pty_sim firmware.elf
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "avr_ioport.h"
#include "sim_avr.h"
#include "sim_elf.h"
#include "uart_pty.h"

static avr_t *avr;
static uart_pty_t uart;

static void on_pin(struct avr_irq_t *irq, uint32_t value, void *channel) {
    (void)irq;
    printf("OUT %d %u %.3f\n", (int)(intptr_t)channel, value,
           (double)avr->cycle * 1000.0 / avr->frequency);
    fflush(stdout);
}

int main(int argc, char *argv[]) {
    elf_firmware_t firmware;
    int channel;
    int state;

    memset(&firmware, 0, sizeof(firmware));
    if (argc != 2 || elf_read_firmware(argv[1], &firmware) != 0) {
        fprintf(stderr, "usage: %s firmware.elf\n", argv[0]);
        return 2;
    }
    if (!firmware.mmcu[0]) {
        strcpy(firmware.mmcu, "atmega328p");
    }
    if (!firmware.frequency) {
        firmware.frequency = 16000000;
    }
    avr = avr_make_mcu_by_name(firmware.mmcu);
    if (!avr) {
        fprintf(stderr, "simavr does not know %s\n", firmware.mmcu);
        return 2;
    }
    avr_init(avr);
    avr_load_firmware(avr, &firmware);
    /* channel n: PD(n+2) for n < 6, PB(n-6) otherwise, as in avr/main.c */
    for (channel = 0; channel < 8; channel++) {
        avr_irq_t *pin = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ(channel < 6 ? 'D' : 'B'),
                                       channel < 6 ? channel + 2 : channel - 6);
        avr_irq_register_notify(pin, on_pin, (void *)(intptr_t)channel);
    }
    uart_pty_init(avr, &uart);
    uart_pty_connect(&uart, '0');
    printf("PTY %s\n", uart.port[0].slavename);
    fflush(stdout);
    do {
        state = avr_run(avr);
    } while (state != cpu_Done && state != cpu_Crashed);
    uart_pty_stop(&uart);
    return state == cpu_Done ? 0 : 1;
}
