"""What a layer is, shared by the building blocks (init, norm, activations, models, data, transfer,
callbacks) without their importing each other: kinds of module (`traits`), weight layers
(`weights`), running part of a network with forward hooks (`hooks`), a network as backbone stages
and head (`stages`), what transfer learning asks of a network (`transferable`) and what a norm or
activation offers a timm model (`timm_offers`)."""
