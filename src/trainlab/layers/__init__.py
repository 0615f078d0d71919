"""What a layer is, shared by the building blocks (init, norm, activations, models, data, transfer,
callbacks) without their importing each other: kinds of module (`traits`), weight layers
(`weights`), running part of a network with forward hooks (`hooks`), a network as backbone stages
and head (`stages`) and what transfer learning asks of a network (`transferable`)."""
